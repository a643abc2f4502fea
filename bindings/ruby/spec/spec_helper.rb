# frozen_string_literal: true

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
require "tasker"
require "json"
require "open3"
require "securerandom"
require "tmpdir"
require "yaml"

Dir[File.join(__dir__, "support", "*.rb")].sort.each { |file| require file }
require_relative "../examples/order_fulfillment"

RSpec.configure do |config|
  config.disable_monkey_patching!
  config.order = :defined
  config.around do |example|
    Dir.mktmpdir("tasker-spec") do |dir|
      @tmp = dir
      example.run
    end
  end
end
