# frozen_string_literal: true

# The handlers of order_fulfillment.yaml. A template's `handler` names the class.
require "tasker"

module Fulfillment
  class ValidateOrder < Tasker::StepHandler
    def call(step)
      order = step.context
      raise Tasker::PermanentError, "order #{order['order_id']} has no items" if order["items"].empty?

      total = order["items"].sum { |item| item["quantity"] * item["price"] }
      { "order_id" => order["order_id"], "total" => total.round(2), "lines" => order["items"].size }
    end
  end

  class ReserveInventory < Tasker::StepHandler
    def call(step)
      skus = step.context["items"].map { |item| item["sku"] }
      { "reservation" => "#{step.config['warehouse']}-#{step.context['order_id']}", "skus" => skus }
    end
  end

  class ChargePayment < Tasker::StepHandler
    def call(step)
      total = step.results("validate_order")["total"]
      # Idempotent on the step id: a payment gateway would take it as its key.
      { "charged" => total, "payment_key" => step.step_id }
    end
  end

  class ShipOrder < Tasker::StepHandler
    def call(step)
      reservation = step.results("reserve_inventory")["reservation"]
      { "shipment" => "#{step.config['carrier']}:#{reservation}",
        "paid" => step.results("charge_payment")["charged"] }
    end
  end
end
