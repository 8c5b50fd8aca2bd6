# BigQuery's "job completed" audit log entries go to the external events
# topic, where the external event listener completes the BigQueryFuture
# waiting for the job: Function Flow's log router, with its filter.

resource "google_logging_project_sink" "bigquery" {
  count = var.bigquery_log_sink ? 1 : 0

  project                = var.project
  name                   = "${var.name_prefix}function-flow-bigquery-jobs"
  description            = "function_flow: completed BigQuery jobs, for BigQueryFuture"
  destination            = "pubsub.googleapis.com/${google_pubsub_topic.topic[var.events_topic].id}"
  filter                 = var.log_sink_filter
  unique_writer_identity = true

  depends_on = [google_project_service.api]
}
