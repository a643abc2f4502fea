# frozen_string_literal: true

RSpec.describe "JSON ↔ Ruby conversions" do
  def round_trip(value)
    Tasker.from_json(Tasker.to_json(value))
  end

  it "round-trips every JSON type exactly" do
    expect(round_trip(Specs::KITCHEN_SINK)).to eq(Specs::KITCHEN_SINK)
  end

  it "keeps Floats Floats and Integers exact, bignums included" do
    expect(round_trip(99.99)).to eql(99.99)
    expect(round_trip(1.0)).to eql(1.0)
    expect(Tasker.to_json(1.0)).to eq("1.0")
    expect(round_trip(2**64)).to eql(2**64)
    expect(round_trip(-(2**127) - 1)).to eql(-(2**127) - 1)
    expect(Tasker.from_json("123456789012345678901234567890")).to eql(123_456_789_012_345_678_901_234_567_890)
    expect(Tasker.from_json("-9223372036854775808")).to eql(-(2**63))
    expect(Tasker.from_json("1e3")).to eql(1000.0)
  end

  it "decodes strings as UTF-8, escapes included" do
    value = Tasker.from_json('"caf\u00e9 \ud83d\ude80 \\"q\\" \\\\ \\/ \\b\\f\\n\\r\\t"')
    expect(value).to eq("café 🚀 \"q\" \\ / \b\f\n\r\t")
    expect(value.encoding).to eq(Encoding::UTF_8)
  end

  it "writes Symbols as strings, keys and values" do
    expect(Tasker.from_json(Tasker.to_json({ status: :ok }))).to eq("status" => "ok")
  end

  it "builds hash keys as interned frozen strings, one object per distinct key" do
    rows = Tasker.from_json('[{"sku": 1}, {"sku": 2}]')
    expect(rows[0].keys[0]).to be_frozen
    expect(rows[0].keys[0]).to equal(rows[1].keys[0])
  end

  it "names the path of a value that cannot become JSON" do
    cases = {
      { "items" => [1, 2, 3, { "at" => Time.at(0) }] } => "value.items[3].at: a Time cannot become JSON",
      { "a" => Object.new } => "value.a: a Object cannot become JSON",
      { "x" => [Float::NAN] } => "value.x[0]: NaN cannot become JSON",
      [Float::INFINITY] => "value[0]: Infinity cannot become JSON",
      { "odd key" => { 1 => 2 } } => "value[\"odd key\"]: a Integer hash key cannot become JSON",
      { "blob" => "\xff".b } => "value.blob: a String in ASCII-8BIT cannot become JSON",
      { "bad" => "\xff".dup.force_encoding("UTF-8") } => "value.bad: a String with invalid UTF-8 cannot become JSON"
    }
    cases.each do |value, message|
      expect { Tasker.to_json(value) }.to raise_error(Tasker::SerializationError) { |e|
        expect(e.message).to start_with(message)
      }
    end
  end

  it "limits nesting both ways, and the limit can be raised" do
    deep = (1..200).reduce([]) { |inner, _| [inner] }
    expect { Tasker.to_json(deep) }.to raise_error(Tasker::SerializationError, /deeper than 128 levels/)
    expect { Tasker.from_json("[" * 200 + "]" * 200) }
      .to raise_error(Tasker::SerializationError, /JSON nested deeper than 128 levels/)
    begin
      Tasker.max_depth = 256
      expect(round_trip(deep)).to eq(deep)
    ensure
      Tasker.max_depth = 128
    end
    expect { Tasker.max_depth = 0 }.to raise_error(ArgumentError)
    expect { Tasker.max_depth = 100_000 }.to raise_error(ArgumentError, /from 1 to 256/)
  end

  it "converts the deepest allowed nesting on a handler thread without exhausting its stack" do
    Tasker.max_depth = 256
    deep = (1..255).reduce([]) { |inner, _| [inner] }
    expect(Thread.new { round_trip(deep) }.value).to eq(deep)
  ensure
    Tasker.max_depth = 128
  end

  it "stops at a structure that contains itself" do
    looped = {}
    looped["self"] = looped
    expect { Tasker.to_json(looped) }.to raise_error(Tasker::SerializationError, /is it recursive\?/)
  end

  it "reports invalid JSON with its position" do
    ['{"a": }', "[1, 2", '"\\x"', "01", "[1] 2", '"\\ud800"', '"\\u+041"', "-", "1.", "tru", "1e400"].each do |bad|
      expect { Tasker.from_json(bad) }.to raise_error(Tasker::SerializationError, /invalid JSON at byte \d+/)
    end
  end
end
