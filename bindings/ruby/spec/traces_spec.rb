# frozen_string_literal: true

require "socket"

# Traces from a Ruby process: after Tasker.export_traces, a task run with Ruby handlers
# sends its task span and one step span per Ruby handler's attempt to the OTLP/HTTP
# collector. In a child process, since a process installs its export once.
RSpec.describe "Tasker.export_traces" do
  # Answers one connection's OTLP/HTTP requests, keeping [request line, content type,
  # body] of each.
  def serve(client, requests)
    while (request_line = client.gets)
      headers = {}
      while (line = client.gets) && line != "\r\n"
        name, value = line.split(":", 2)
        headers[name.downcase] = value.strip
      end
      body = client.read(Integer(headers.fetch("content-length")))
      requests << [request_line.strip, headers["content-type"], body]
      client.write("HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
    end
  ensure
    client.close
  end

  # Yields the endpoint of a receiver on a loopback port; returns what it received.
  def receive_traces
    server = TCPServer.new("127.0.0.1", 0)
    requests = Queue.new
    acceptor = Thread.new { loop { Thread.new(server.accept) { |c| serve(c, requests) } } }
    yield "http://127.0.0.1:#{server.addr[1]}"
    Array.new(requests.size) { requests.pop }
  ensure
    acceptor&.kill
    server&.close
  end

  # Runs `script` in a child Ruby exporting to a receiver; returns [its stdout, the
  # requests received].
  def run_traced(script, template)
    out = nil
    requests = receive_traces do |endpoint|
      out, err, status = Open3.capture3({ "TASKER_OTEL_ENDPOINT" => endpoint },
                                        "ruby", "-I", File.expand_path("../lib", __dir__),
                                        "-e", script, template)
      expect(status).to be_success, err
    end
    [out, requests]
  end

  it "exports the task span and each Ruby handler's step span" do
    template = Specs.ruby_template("diamond", @tmp)
    script = <<~RUBY
      require "tasker"
      require #{File.join(__dir__, 'support', 'handlers').inspect}
      Tasker.export_traces(service_name: "ruby-spec")
      exit(Tasker.run(ARGV.fetch(0), context: { "start" => 0 }).complete? ? 0 : 1)
    RUBY
    _out, requests = run_traced(script, template)
    expect(requests).not_to be_empty
    requests.each do |line, type, _|
      expect([line, type]).to eq(["POST /v1/traces HTTP/1.1", "application/x-protobuf"])
    end
    sent = requests.map(&:last).join.b
    # Protobuf keeps strings as they are: the process's service name, the task span's
    # template name, and the handler of each of the four step spans.
    expect(sent).to include("ruby-spec".b, "diamond".b)
    expect(sent.scan("Specs::Sum".b).size).to eq(4)
  end

  it "gives a handler the trace context of its attempt's span" do
    template = Specs.ruby_template("diamond", @tmp) do |doc|
      doc["steps"].each { |s| s["handler"] = "Specs::Seeing" }
    end
    script = <<~RUBY
      require "json"
      require "tasker"
      require #{File.join(__dir__, 'support', 'handlers').inspect}
      module Specs
        class Seeing < Sum
          def call(step) = super.merge("traceparent" => step.traceparent)
        end
      end
      Tasker.export_traces(service_name: "ruby-spec")
      task = Tasker.run(ARGV.fetch(0), context: { "start" => 0 })
      puts JSON.generate(task.steps.map { |s| s.results["traceparent"] })
    RUBY
    out, requests = run_traced(script, template)
    given = JSON.parse(out)
    expect(given.size).to eq(4)
    expect(given).to all(match(/\A00-\h{32}-\h{16}-01\z/))
    ids = given.map { |t| t.split("-") }
    expect(ids.map { |i| i[1] }.uniq.size).to eq(1), "one trace: #{given}"
    expect(ids.map { |i| i[2] }.uniq.size).to eq(4), "a span each: #{given}"
    # The ids given are those of the spans sent (protobuf keeps them as raw bytes).
    sent = requests.map(&:last).join.b
    ids.each { |_, trace, span, _| expect(sent).to include([trace].pack("H*"), [span].pack("H*")) }
  end

  it "refuses an endpoint it cannot send to" do
    script = 'require "tasker"; Tasker.export_traces(endpoint: "localhost:4318")'
    _out, err, status = Open3.capture3("ruby", "-I", File.expand_path("../lib", __dir__), "-e", script)
    expect(status).not_to be_success
    expect(err).to include("cannot export traces to `localhost:4318`: use an http:// URL")
  end
end
