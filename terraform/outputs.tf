output "start_url" {
  description = "URL of the start function: POST the run arguments as JSON, with an identity token."
  value       = local.function_url["start"]
}

output "function_urls" {
  description = "URL of every function, by name."
  value       = local.function_url
}

output "control_url" {
  description = "URL of the control function (pause, resume, cancel), or null when it is left out."
  value       = lookup(local.function_url, "control", null)
}

output "callback_url" {
  description = "The callback function's URL the functions get as FUNCTION_FLOW_CALLBACK_URL, or null when it is left out."
  value       = local.callback_url
}

output "schedule_topic" {
  description = "Name of the scheduling topic."
  value       = google_pubsub_topic.topic[var.schedule_topic].name
}

output "events_topic" {
  description = "Name of the external events topic."
  value       = google_pubsub_topic.topic[var.events_topic].name
}

output "remote_topics" {
  description = "Topic of each remote function, by function name."
  value       = { for name, remote in var.remote_functions : name => google_pubsub_topic.topic[remote.topic].name }
}

output "dead_letter_topics" {
  description = "Dead-letter topic of each topic-triggered function, by function name."
  value       = { for name, topic in google_pubsub_topic.dead_letter : name => topic.name }
}

output "dead_letter_subscriptions" {
  description = "Subscription keeping each dead-letter topic's messages (7 days), by function name."
  value       = { for name, subscription in google_pubsub_subscription.dead_letter : name => subscription.name }
}

output "service_account_email" {
  description = "The account the functions run as."
  value       = google_service_account.runtime.email
}

output "invoker_service_account_email" {
  description = "The account the push subscriptions and Cloud Scheduler call the functions as."
  value       = google_service_account.invoker.email
}

output "build_service_account_email" {
  description = "The account Cloud Build builds the functions as."
  value       = var.build_service_account != null ? var.build_service_account : google_service_account.build[0].email
}

output "hmac_secret_id" {
  description = "Secret Manager secret holding the HMAC key."
  value       = local.hmac_secret_id
}

output "poller_job" {
  description = "Name of the poller's Cloud Scheduler job."
  value       = google_cloud_scheduler_job.poller.name
}

output "firestore_database" {
  description = "Firestore database of the runs."
  value       = local.firestore_database
}

output "source" {
  description = "Bucket and object the functions are built from."
  value       = { bucket = local.source_bucket, object = local.source_object }
}

output "log_sink_writer_identity" {
  description = "Identity the BigQuery log sink publishes as, or null without the sink."
  value       = local.sink_writer_member
}
