# The Cloud Functions (2nd gen), all from one source archive: start,
# scheduler, external_event_listener, poller, callback, control and each
# remote function. None is public: every caller needs roles/run.invoker on
# the function's service (iam.tf), and nothing grants it to allUsers or
# allAuthenticatedUsers.
#
# All of them are HTTP functions. The ones a topic triggers are called by our
# own push subscription (pubsub.tf) rather than an Eventarc trigger, because
# a trigger's own subscription cannot take a dead-letter policy. function_flow
# reads every delivery shape (function_flow/cloud/delivery.py), a push
# envelope included.

resource "google_cloudfunctions2_function" "function" {
  for_each = local.functions

  project     = var.project
  location    = var.region
  name        = local.function_names[each.key]
  description = each.value.topic == null ? "function_flow ${each.key} (HTTP)" : "function_flow ${each.key} (pushed from ${each.value.topic})"
  labels      = var.labels

  build_config {
    runtime         = var.runtime
    entry_point     = each.value.entry_point
    service_account = local.build_service_account_id

    source {
      storage_source {
        bucket = local.source_bucket
        object = local.source_object
      }
    }
  }

  service_config {
    service_account_email          = google_service_account.runtime.email
    available_memory               = var.memory
    timeout_seconds                = var.timeout_seconds
    max_instance_count             = var.max_instances
    ingress_settings               = "ALLOW_ALL"
    all_traffic_on_latest_revision = true
    environment_variables          = local.environment

    # FUNCTION_FLOW_HMAC_KEY and, while a key is being rotated,
    # FUNCTION_FLOW_HMAC_PREVIOUS_KEY: versions of the one secret.
    dynamic "secret_environment_variables" {
      for_each = each.value.hmac ? local.hmac_variables : {}

      content {
        key        = secret_environment_variables.key
        project_id = var.project
        secret     = local.hmac_secret_id
        version    = secret_environment_variables.value
      }
    }
  }

  depends_on = [
    google_project_service.api,
    # A deployment fails when the runtime account cannot read the secret,
    # or the build account cannot build.
    google_secret_manager_secret_iam_member.runtime_hmac_accessor,
    google_secret_manager_secret_version.hmac,
    google_project_iam_member.build_run_builder,
    google_storage_bucket_iam_member.build_source_viewer,
  ]
}
