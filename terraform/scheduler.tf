# The poller's clock: Cloud Scheduler POSTs to the poller with an OIDC token
# of the invoker account. Every call is one tick (core/recovery.py): due
# timers (retry delays) are published, expired leases handled, lost messages
# sent again, and Cloud Storage prefixes that GCSFutures wait for checked.

resource "google_cloud_scheduler_job" "poller" {
  project          = var.project
  region           = var.region
  name             = "${var.name_prefix}function-flow-poller"
  description      = "function_flow: one poller tick"
  schedule         = var.poller_schedule
  time_zone        = var.poller_time_zone
  attempt_deadline = "${var.timeout_seconds}s"

  # A failed tick is not retried: the next one comes at the next schedule.
  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = local.function_url["poller"]

    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = local.function_url["poller"]
    }
  }

  depends_on = [
    google_project_service.api,
    google_cloud_run_service_iam_member.invoker,
  ]
}
