# frozen_string_literal: true

# The Ruby boundary, lean against naive, on the reference inputs (the step message of
# ../../crates/tasker-core/benches/reference/inputs.json). Run with `rake bench`, which
# builds the extension in release mode with the `boundary-bench` feature.
#
# Per operation: Rust allocations and bytes (the counting allocator, this thread), Ruby
# objects allocated (GC.stat), Ruby strings allocated (T_STRING count with GC off), and
# ns/op (median of 5 runs).
require "etc"
require "json"
require "tasker"

INPUTS = JSON.parse(File.read(File.expand_path("../../../crates/tasker-core/benches/reference/inputs.json", __dir__)))
CONTEXT = JSON.generate(INPUTS["task_context"])
CONFIG = JSON.generate(INPUTS["step_payload"])
PARENTS = INPUTS["dependency_results"].map { |d| [d["step_name"], JSON.generate(d["results"])] }
RESULT = INPUTS["step_result_results"]

lean = Tasker::Bench.step_context(CONTEXT, CONFIG, PARENTS)
naive = Tasker::Bench::NaiveContext.new(CONTEXT, CONFIG, PARENTS)

NAMES = ->(c) { c.namespace; c.task_name; c.task_version; c.step_name }
OPERATIONS = [
  ["name getter (namespace)", 20_000, ->(c) { c.namespace }, ->(c) { c.namespace }],
  ["4 name getters", 5_000, NAMES, NAMES],
  ["context → Ruby", 2_000, ->(c) { c.send(:native_context) }, ->(c) { c.context }],
  ["parents' results → Ruby", 2_000, ->(c) { c.send(:native_parent_results) }, ->(c) { c.parent_results }],
  ["result → JSON", 2_000, ->(c) { c.send(:native_succeed, RESULT) }, ->(c) { c.succeed(RESULT) }],
  ["handler invocation (4 names, context, config, parents, result)", 1_000,
   lambda { |c|
     NAMES.(c)
     c.send(:native_context)
     c.send(:native_config)
     c.send(:native_parent_results)
     c.send(:native_succeed, RESULT)
   },
   lambda { |c|
     NAMES.(c)
     c.context
     c.config
     c.parent_results
     c.succeed(RESULT)
   }]
].freeze

def ruby_objects(n, op, ctx)
  before = GC.stat(:total_allocated_objects)
  n.times { op.(ctx) }
  (GC.stat(:total_allocated_objects) - before).fdiv(n)
end

def ruby_strings(n, op, ctx)
  GC.start
  GC.disable
  before = ObjectSpace.count_objects[:T_STRING]
  n.times { op.(ctx) }
  (ObjectSpace.count_objects[:T_STRING] - before).fdiv(n)
ensure
  GC.enable
end

def rust(n, op, ctx)
  allocations, bytes = Tasker::Bench.rust_allocations { n.times { op.(ctx) } }
  [allocations.fdiv(n), bytes.fdiv(n)]
end

def nanos(n, op, ctx)
  runs = Array.new(5) do
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond)
    n.times { op.(ctx) }
    (Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond) - started).fdiv(n)
  end
  runs.sort[2]
end

def measure(n, op, ctx)
  5.times { op.(ctx) } # warm-up: first calls create interned strings
  { rust: rust(n, op, ctx), objects: ruby_objects(n, op, ctx), strings: ruby_strings(n, op, ctx),
    ns: nanos(n, op, ctx) }
end

def fewer(lean, naive)
  naive.zero? ? "–" : format("%.0f %%", 100 * (1 - lean / naive))
end

rows = OPERATIONS.map do |name, n, lean_op, naive_op|
  [name, measure(n, lean_op, lean), measure(n, naive_op, naive)]
end

puts "ruby #{RUBY_VERSION}, #{`uname -m`.strip}, #{Etc.respond_to?(:nprocessors) ? Etc.nprocessors : '?'} cores"
puts
puts "| operation | Rust allocs lean / naive | Rust bytes lean / naive | Ruby objects lean / naive | " \
     "Ruby strings lean / naive (fewer) | ns lean / naive |"
puts "|---|---:|---:|---:|---:|---:|"
rows.each do |name, l, n|
  puts format("| %s | %.1f / %.1f | %.0f / %.0f | %.1f / %.1f | %.1f / %.1f (%s) | %.0f / %.0f |",
              name, l[:rust][0], n[:rust][0], l[:rust][1], n[:rust][1], l[:objects], n[:objects],
              l[:strings], n[:strings], fewer(l[:strings], n[:strings]), l[:ns], n[:ns])
end
puts
puts JSON.generate(rows.to_h { |name, l, n| [name, { lean: l, naive: n }] })
