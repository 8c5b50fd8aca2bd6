# function_flow on Google Cloud: the functions of one workflow file (main.py),
# their topics, the Firestore database, the poller's Cloud Scheduler job, the
# BigQuery log sink and the HMAC secret, run by dedicated service accounts.
#
# What is where: functions.tf (Cloud Functions 2nd gen), pubsub.tf (topics,
# push subscriptions, dead letters), iam.tf (service accounts and every role
# grant), scheduler.tf, firestore.tf, logging.tf, secret.tf, source.tf.

data "google_project" "project" {
  project_id = var.project
}

locals {
  default_entry_points = {
    start                   = "start"
    scheduler               = "scheduler"
    external_event_listener = "external_event_listener"
    poller                  = "poller"
    callback                = "callback"
    control                 = "control"
  }
  # A null entry point leaves that function out (a main.py without `control`).
  entry_points = {
    for name, entry in merge(local.default_entry_points, var.entry_points) : name => entry
    if entry != null
  }

  # The topic whose push subscription triggers a function; the others are
  # called over HTTP (start, control, callback by people and gateways; the
  # poller by Cloud Scheduler).
  core_topics = {
    scheduler               = var.schedule_topic
    external_event_listener = var.events_topic
  }

  # Every function, by name: its entry point, its trigger topic (or null) and
  # whether it gets the HMAC key (every one does: remote.function functions
  # check the requests they get and sign their answers).
  functions = merge(
    {
      for name, entry in local.entry_points : name => {
        entry_point = entry
        topic       = lookup(local.core_topics, name, null)
        hmac        = true
      }
    },
    {
      for name, remote in var.remote_functions : name => {
        entry_point = coalesce(remote.entry_point, name)
        topic       = remote.topic
        hmac        = true
      }
    },
  )

  # Cloud Functions (2nd gen) are Cloud Run services: lowercase letters,
  # digits and hyphens, so external_event_listener is external-event-listener.
  function_names = {
    for name in keys(local.functions) : name => "${var.name_prefix}${replace(name, "_", "-")}"
  }

  # Functions triggered by a topic: each gets our own push subscription with
  # retries and a dead-letter topic (pubsub.tf).
  event_functions = { for name, function in local.functions : name => function if function.topic != null }

  topics = toset(concat(
    [var.schedule_topic, var.events_topic],
    [for remote in values(var.remote_functions) : remote.topic],
  ))

  # What the invoker account calls: every push subscription's function, and
  # the poller (Cloud Scheduler).
  invoked_functions = toset(concat(keys(local.event_functions), ["poller"]))

  # Who else may call a function (var.invokers), one grant per member.
  caller_grants = {
    for grant in flatten([
      for name, members in var.invokers : [
        for member in members : { function = name, member = member }
      ]
    ]) : "${grant.function} ${grant.member}" => grant
  }

  function_url = {
    for name, function in google_cloudfunctions2_function.function : name => function.service_config[0].uri
  }
  # The scheduler hands this URL to OpenFaaS gateways (FUNCTION_FLOW_CALLBACK_URL).
  # Known before the function exists, so no function depends on another.
  callback_url = contains(keys(local.entry_points), "callback") ? "https://${var.region}-${var.project}.cloudfunctions.net/${local.function_names["callback"]}" : null

  blobs_bucket_name = var.blobs_bucket == null ? null : split("/", trimprefix(var.blobs_bucket, "gs://"))[0]

  # What every function reads (function_flow/config.py).
  environment = merge(
    var.environment_variables,
    {
      FUNCTION_FLOW_BACKEND            = "gcp"
      GOOGLE_CLOUD_PROJECT             = var.project
      FUNCTION_FLOW_FIRESTORE_DATABASE = local.firestore_database
      FUNCTION_FLOW_SCHEDULE_TOPIC     = var.schedule_topic
      FUNCTION_FLOW_EVENTS_TOPIC       = var.events_topic
      FUNCTION_FLOW_FUNCTION_TIMEOUT   = tostring(var.timeout_seconds)
    },
    var.collection_prefix == "" ? {} : { FUNCTION_FLOW_COLLECTION_PREFIX = var.collection_prefix },
    var.blobs_bucket == null ? {} : { FUNCTION_FLOW_BUCKET = var.blobs_bucket },
    local.callback_url == null ? {} : { FUNCTION_FLOW_CALLBACK_URL = local.callback_url },
    var.run_ttl ? { FUNCTION_FLOW_RUN_TTL_DAYS = tostring(var.run_ttl_days) } : {},
    var.tracing == "off" ? {} : { FUNCTION_FLOW_TRACING = var.tracing },
  )

  # The members of the grants in iam.tf (the module README's role table).
  runtime_member      = "serviceAccount:${google_service_account.runtime.email}"
  invoker_member      = "serviceAccount:${google_service_account.invoker.email}"
  build_member        = var.build_service_account == null ? "serviceAccount:${google_service_account.build[0].email}" : null
  pubsub_agent_member = "serviceAccount:service-${data.google_project.project.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  sink_writer_member  = one(google_logging_project_sink.bigquery[*].writer_identity)

  apis = concat([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ], var.tracing == "gcp" ? ["cloudtrace.googleapis.com"] : [])
}

resource "google_project_service" "api" {
  for_each = var.enable_apis ? toset(local.apis) : toset([])

  project = var.project
  service = each.key
  # Other things in the project may use these APIs: never turn them off.
  disable_on_destroy = false
}
