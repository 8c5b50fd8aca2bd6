# The service accounts and every role this module grants: the table in
# README.md ("Roles"), row for row; tests/test_terraform.py holds the two
# to each other. Each grant is on the narrowest resource that has IAM, and
# adds one member (an *_iam_member): nothing else's access is replaced.

# The functions run as this account.
resource "google_service_account" "runtime" {
  project      = var.project
  account_id   = "${var.name_prefix}function-flow-runtime"
  display_name = "function_flow functions"
  description  = "Runs the function_flow Cloud Functions: Firestore, its topics, the HMAC secret."

  depends_on = [google_project_service.api]
}

# Pub/Sub push subscriptions and Cloud Scheduler call the functions as this
# account (their OIDC tokens name it).
resource "google_service_account" "invoker" {
  project      = var.project
  account_id   = "${var.name_prefix}function-flow-invoker"
  display_name = "function_flow invoker"
  description  = "Identity of the push subscriptions and of the poller's Cloud Scheduler job."

  depends_on = [google_project_service.api]
}

# Cloud Build builds the functions as this account (unless build_service_account names one).
resource "google_service_account" "build" {
  count = var.build_service_account == null ? 1 : 0

  project      = var.project
  account_id   = "${var.name_prefix}function-flow-build"
  display_name = "function_flow build"
  description  = "Builds the function_flow Cloud Functions from their source archive."

  depends_on = [google_project_service.api]
}

locals {
  build_service_account_id = var.build_service_account != null ? "projects/${var.project}/serviceAccounts/${var.build_service_account}" : google_service_account.build[0].id
}

# ------------------------------------------------------------------ runtime

resource "google_project_iam_member" "runtime_datastore_user" {
  project = var.project
  role    = "roles/datastore.user"
  member  = local.runtime_member
}

resource "google_project_iam_member" "runtime_cloudtrace_agent" {
  count = var.tracing == "gcp" ? 1 : 0

  project = var.project
  role    = "roles/cloudtrace.agent"
  member  = local.runtime_member
}

resource "google_pubsub_topic_iam_member" "runtime_publisher" {
  for_each = local.topics

  project = var.project
  topic   = google_pubsub_topic.topic[each.key].name
  role    = "roles/pubsub.publisher"
  member  = local.runtime_member
}

resource "google_secret_manager_secret_iam_member" "runtime_hmac_accessor" {
  project   = var.project
  secret_id = local.hmac_secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.runtime_member
}

resource "google_storage_bucket_iam_member" "runtime_blobs_admin" {
  count = var.blobs_bucket == null ? 0 : 1

  bucket = local.blobs_bucket_name
  role   = "roles/storage.objectAdmin"
  member = local.runtime_member
}

# ------------------------------------------------------------------ invoker

resource "google_cloud_run_service_iam_member" "invoker" {
  for_each = local.invoked_functions

  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.function[each.key].name
  role     = "roles/run.invoker"
  member   = local.invoker_member
}

# ------------------------------------------------------------------ build

resource "google_project_iam_member" "build_run_builder" {
  count = var.build_service_account == null ? 1 : 0

  project = var.project
  role    = "roles/run.builder"
  member  = local.build_member
}

resource "google_storage_bucket_iam_member" "build_source_viewer" {
  count = var.build_service_account == null ? 1 : 0

  bucket = local.source_bucket
  role   = "roles/storage.objectViewer"
  member = local.build_member
}

# --------------------------------------------------- Pub/Sub service agent

# Lets Pub/Sub sign the push subscriptions' OIDC tokens as the invoker account.
resource "google_service_account_iam_member" "pubsub_agent_token_creator" {
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent_member
}

# Dead-lettering is Pub/Sub publishing to the dead-letter topic...
resource "google_pubsub_topic_iam_member" "pubsub_agent_dead_letter_publisher" {
  for_each = local.event_functions

  project = var.project
  topic   = google_pubsub_topic.dead_letter[each.key].name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent_member
}

# ...and acknowledging the message on the subscription it failed on.
resource "google_pubsub_subscription_iam_member" "pubsub_agent_push_subscriber" {
  for_each = local.event_functions

  project      = var.project
  subscription = google_pubsub_subscription.push[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent_member
}

# ------------------------------------------------------ log sink's writer

resource "google_pubsub_topic_iam_member" "sink_writer_publisher" {
  count = var.bigquery_log_sink ? 1 : 0

  project = var.project
  topic   = google_pubsub_topic.topic[var.events_topic].name
  role    = "roles/pubsub.publisher"
  member  = local.sink_writer_member
}

# ------------------------------------------------------------------ callers

# The people and accounts in var.invokers (who may start runs, control them,
# or answer on the callback function).
resource "google_cloud_run_service_iam_member" "caller" {
  for_each = local.caller_grants

  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.function[each.value.function].name
  role     = "roles/run.invoker"
  member   = each.value.member
}
