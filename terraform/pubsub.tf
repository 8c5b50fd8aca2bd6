# Topics, and the push subscriptions that trigger the event functions.
#
# Each topic a function listens to (SCHEDULE, SCHEDULE_EXTERNAL_EVENTS, each
# remote function's) has exactly one push subscription: to the function's
# URL, with an OIDC token of the invoker account, exponential retries, and a
# dead-letter topic after max_delivery_attempts. function_flow answers a 2xx
# once a message is handled or rejected as malformed (logged), and a 5xx only
# when Firestore or Pub/Sub failed: that is what the retries are for. A
# message that still fails lands in the dead-letter topic, where the
# subscription below keeps it for 7 days.

resource "google_pubsub_topic" "topic" {
  for_each = local.topics

  project = var.project
  name    = each.key
  labels  = var.labels

  depends_on = [google_project_service.api]
}

resource "google_pubsub_topic" "dead_letter" {
  for_each = local.event_functions

  project = var.project
  name    = "${each.value.topic}-dead-letter"
  labels  = var.labels

  depends_on = [google_project_service.api]
}

# A topic keeps nothing by itself: this keeps the dead letters to look at
# (gcloud pubsub subscriptions pull TOPIC-dead-letter).
resource "google_pubsub_subscription" "dead_letter" {
  for_each = local.event_functions

  project                    = var.project
  name                       = "${each.value.topic}-dead-letter"
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  labels                     = var.labels
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = "" # never expires, however long nothing is dead-lettered
  }
}

resource "google_pubsub_subscription" "push" {
  for_each = local.event_functions

  project = var.project
  name    = "${local.function_names[each.key]}-push"
  topic   = google_pubsub_topic.topic[each.value.topic].id
  labels  = var.labels

  # A push waits this long for the function's answer: its whole timeout.
  ack_deadline_seconds       = var.timeout_seconds
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }

  retry_policy {
    minimum_backoff = var.retry_minimum_backoff
    maximum_backoff = var.retry_maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.key].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  push_config {
    push_endpoint = local.function_url[each.key]

    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = local.function_url[each.key]
    }
  }

  depends_on = [
    google_cloud_run_service_iam_member.invoker,
    google_service_account_iam_member.pubsub_agent_token_creator,
    google_pubsub_topic_iam_member.pubsub_agent_dead_letter_publisher,
  ]
}
