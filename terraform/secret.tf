# The HMAC key that signs completion callbacks (function_flow/signing.py),
# a Secret Manager secret the functions read as FUNCTION_FLOW_HMAC_KEY.
#
# Without hmac_secret_id the module creates the secret and its first version
# from a random 64-character key. The key is ephemeral and written through a
# write-only argument: it is in neither the plan nor the state.

resource "google_secret_manager_secret" "hmac" {
  count = var.hmac_secret_id == null ? 1 : 0

  project   = var.project
  secret_id = "${var.name_prefix}function-flow-hmac-key"
  labels    = var.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.api]
}

ephemeral "random_password" "hmac" {
  count = var.hmac_secret_id == null ? 1 : 0

  length  = 64
  special = false
}

resource "google_secret_manager_secret_version" "hmac" {
  count = var.hmac_secret_id == null ? 1 : 0

  secret                 = google_secret_manager_secret.hmac[0].id
  secret_data_wo         = ephemeral.random_password.hmac[0].result
  secret_data_wo_version = 1
}

locals {
  hmac_secret_id = var.hmac_secret_id != null ? var.hmac_secret_id : google_secret_manager_secret.hmac[0].secret_id

  # Environment variable => secret version.
  hmac_variables = merge(
    { FUNCTION_FLOW_HMAC_KEY = var.hmac_key_version },
    var.hmac_previous_key_version == null ? {} : { FUNCTION_FLOW_HMAC_PREVIOUS_KEY = var.hmac_previous_key_version },
  )
}
