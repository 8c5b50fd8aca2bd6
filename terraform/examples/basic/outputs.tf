output "start_url" {
  description = "POST the run arguments here, with an identity token."
  value       = module.function_flow.start_url
}

output "control_url" {
  description = "POST {\"action\": \"pause\", \"run_id\": ...} here, with an identity token."
  value       = module.function_flow.control_url
}

output "service_account_email" {
  description = "The account the functions run as: grant it what the tasks touch."
  value       = module.function_flow.service_account_email
}

output "dead_letter_subscriptions" {
  description = "Where undeliverable messages wait, by function."
  value       = module.function_flow.dead_letter_subscriptions
}
