# ------------------------------------------------------------------ where

variable "project" {
  description = "Google Cloud project id to deploy into."
  type        = string

  validation {
    condition     = can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", var.project))
    error_message = "project must be a project id: 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region of the functions, the Cloud Scheduler job, the source bucket and (unless firestore_location says otherwise) the Firestore database, e.g. europe-west1."
  type        = string

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as europe-west1 or us-central1."
  }
}

variable "name_prefix" {
  description = "Prefix of every name the module makes (functions, service accounts, subscriptions, job, sink, secret), so that two workflows can share a project: empty, or up to 9 characters ending with '-', e.g. \"sales-\". Topic names are not prefixed: set them."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([a-z][-a-z0-9]{0,7}-)?$", var.name_prefix))
    error_message = "name_prefix must be empty or 2-9 lowercase letters, digits or hyphens, starting with a letter and ending with '-' (service account ids are at most 30 characters)."
  }
}

variable "labels" {
  description = "Labels for every resource that takes them."
  type        = map(string)
  default     = {}
}

variable "enable_apis" {
  description = "Enable the APIs the module uses (never disabled again on destroy). false: they are enabled already."
  type        = bool
  default     = true
}

# ------------------------------------------------------------------ source

variable "source_archive" {
  description = "Path of a local .zip of the source directory (main.py, requirements.txt, function_flow); the module uploads it. Prefer an absolute path or one under path.root. Give this, or source_bucket and source_object."
  type        = string
  default     = null

  validation {
    condition     = (var.source_archive == null) != (var.source_object == null)
    error_message = "Give either source_archive (a local .zip the module uploads) or source_bucket and source_object (an archive already in Cloud Storage): exactly one of source_archive and source_object."
  }

  validation {
    condition     = var.source_archive == null || endswith(coalesce(var.source_archive, "-"), ".zip")
    error_message = "source_archive must be a .zip file (Cloud Functions builds from a zip)."
  }
}

variable "source_bucket" {
  description = "Existing bucket to upload source_archive to, or that holds source_object. null: the module creates PROJECT-[PREFIX]function-flow-source."
  type        = string
  default     = null
}

variable "source_object" {
  description = "Object in source_bucket: a .zip of the source directory already uploaded. Instead of source_archive."
  type        = string
  default     = null

  validation {
    condition     = var.source_object == null || var.source_bucket != null
    error_message = "source_object needs source_bucket: the bucket that holds it."
  }
}

variable "runtime" {
  description = "Cloud Functions runtime of every function."
  type        = string
  default     = "python312"

  validation {
    condition     = can(regex("^python3[0-9]+$", var.runtime))
    error_message = "runtime must be a Python runtime such as python312 (function_flow needs Python 3.10 or newer)."
  }
}

variable "build_service_account" {
  description = "Email of an existing service account Cloud Build builds the functions as. null: the module creates one (function-flow-build) with the roles it needs."
  type        = string
  default     = null

  validation {
    condition     = var.build_service_account == null || can(regex("^[^@\\s]+@[^@\\s]+\\.iam\\.gserviceaccount\\.com$", coalesce(var.build_service_account, "-")))
    error_message = "build_service_account must be a service account email (NAME@PROJECT.iam.gserviceaccount.com)."
  }
}

# ------------------------------------------------------------------ functions

variable "entry_points" {
  description = "Function => entry point in main.py, over the defaults start, scheduler, external_event_listener, poller, callback and control (each function's name is its entry point). null leaves out callback or control; start, scheduler, external_event_listener and poller are always deployed."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for name in keys(var.entry_points) :
      contains(["start", "scheduler", "external_event_listener", "poller", "callback", "control"], name)
    ])
    error_message = "entry_points keys must be among start, scheduler, external_event_listener, poller, callback and control (remote functions go in remote_functions)."
  }

  validation {
    condition = alltrue([
      for name in ["start", "scheduler", "external_event_listener", "poller"] :
      !contains(keys(var.entry_points), name) || lookup(var.entry_points, name, "") != null
    ])
    error_message = "start, scheduler, external_event_listener and poller cannot be left out (null): a workflow needs all four."
  }

  validation {
    condition = alltrue([
      for entry in values(var.entry_points) :
      entry == null || can(regex("^[A-Za-z_][A-Za-z0-9_]*$", coalesce(entry, "-")))
    ])
    error_message = "Each entry point must be the name of a function main.py exports (a Python identifier)."
  }
}

variable "remote_functions" {
  description = "Remote functions the workflow file defines (remote.function), by function name: the topic that triggers it and, when it differs from the name, its entry point. E.g. { regional_pricing = { topic = \"PRICING_REQUESTS\" } }."
  type = map(object({
    topic       = string
    entry_point = optional(string)
  }))
  default = {}

  validation {
    condition     = alltrue([for name in keys(var.remote_functions) : can(regex("^[a-z]([a-z0-9_]{0,39}[a-z0-9])?$", name))])
    error_message = "Each remote function name must be 1-41 lowercase letters, digits or underscores, starting with a letter and not ending with '_' (it becomes the function's name, '_' written '-', which Cloud Functions refuses at the end)."
  }

  validation {
    condition = alltrue([
      for name in keys(var.remote_functions) :
      !contains(["start", "scheduler", "external_event_listener", "poller", "callback", "control"], name)
    ])
    error_message = "A remote function cannot be named like one of function_flow's own functions (start, scheduler, external_event_listener, poller, callback, control)."
  }

  validation {
    condition = alltrue([
      for remote in values(var.remote_functions) :
      remote.entry_point == null || can(regex("^[A-Za-z_][A-Za-z0-9_]*$", coalesce(remote.entry_point, "-")))
    ])
    error_message = "Each remote function's entry_point must be the name of a function main.py exports (a Python identifier)."
  }

  validation {
    condition = alltrue([
      for remote in values(var.remote_functions) :
      can(regex("^[A-Za-z][-A-Za-z0-9._~%+]{2,242}$", remote.topic)) && !startswith(lower(remote.topic), "goog")
    ])
    error_message = "Each remote function's topic must be a Pub/Sub topic name: 3-243 letters, digits or -._~%+, starting with a letter, not with 'goog'."
  }

  validation {
    condition = (
      length(distinct([for remote in values(var.remote_functions) : remote.topic])) == length(var.remote_functions)
      && alltrue([for remote in values(var.remote_functions) : !contains([var.schedule_topic, var.events_topic], remote.topic)])
    )
    error_message = "Each remote function needs a topic of its own, other than schedule_topic and events_topic: every subscriber of a topic would answer each request."
  }
}

variable "invokers" {
  description = "Function => IAM members allowed to call it (roles/run.invoker), e.g. { start = [\"group:ops@example.com\"], control = [\"group:ops@example.com\"] }. Never allUsers or allAuthenticatedUsers."
  type        = map(list(string))
  default     = {}

  validation {
    condition = alltrue(flatten([
      for members in values(var.invokers) : [
        for member in members : !contains(["allUsers", "allAuthenticatedUsers"], member)
      ]
    ]))
    error_message = "invokers cannot name allUsers or allAuthenticatedUsers: function_flow's functions are never public. Name the users, groups or service accounts that may call them."
  }

  validation {
    condition = alltrue(flatten([
      for members in values(var.invokers) : [
        for member in members : can(regex("^(user|serviceAccount|group|domain):[^:\\s]+$|^principal(Set)?://", member))
      ]
    ]))
    error_message = "Each invoker must be an IAM member: user:EMAIL, serviceAccount:EMAIL, group:EMAIL, domain:DOMAIN, principal://... or principalSet://..."
  }

  validation {
    condition = alltrue([
      for name in keys(var.invokers) : contains(concat(
        [for core in ["start", "scheduler", "external_event_listener", "poller", "callback", "control"] : core if lookup(var.entry_points, core, core) != null],
        keys(var.remote_functions),
      ), name)
    ])
    error_message = "invokers keys must be functions the module deploys: start, scheduler, external_event_listener, poller, callback or control (unless entry_points leaves it out), or a remote function's name."
  }
}

variable "memory" {
  description = "Memory of each function instance (Cloud Functions 2nd gen notation)."
  type        = string
  default     = "512M"

  validation {
    condition     = can(regex("^[0-9]+(M|Mi|G|Gi)$", var.memory))
    error_message = "memory must look like 256M, 512M, 1G or 2Gi."
  }
}

variable "timeout_seconds" {
  description = "Timeout of each function, also how long a push waits for its answer (the subscription's ack deadline, at most 600) and the poller call's deadline. The functions get it as FUNCTION_FLOW_FUNCTION_TIMEOUT."
  type        = number
  default     = 540

  validation {
    condition     = var.timeout_seconds >= 15 && var.timeout_seconds <= 600 && floor(var.timeout_seconds) == var.timeout_seconds
    error_message = "timeout_seconds must be a whole number from 15 (Cloud Scheduler's shortest deadline) to 600 (Pub/Sub's longest ack deadline)."
  }
}

variable "max_instances" {
  description = "Most instances of each function at once."
  type        = number
  default     = 100

  validation {
    condition     = var.max_instances >= 1 && floor(var.max_instances) == var.max_instances
    error_message = "max_instances must be a whole number of at least 1."
  }
}

variable "environment_variables" {
  description = "More environment variables for every function, e.g. FUNCTION_FLOW_OPENFAAS_GATEWAY. The ones the module sets itself win."
  type        = map(string)
  default     = {}

  validation {
    condition = alltrue([
      for name in keys(var.environment_variables) :
      !contains(["FUNCTION_FLOW_HMAC_KEY", "FUNCTION_FLOW_HMAC_PREVIOUS_KEY"], name)
    ])
    error_message = "The HMAC keys come from Secret Manager (hmac_secret_id), never from environment_variables."
  }
}

# ------------------------------------------------------------------ topics

variable "schedule_topic" {
  description = "Topic of scheduling messages (the Job's schedule_topic), which triggers the scheduler."
  type        = string
  default     = "SCHEDULE"

  validation {
    condition     = can(regex("^[A-Za-z][-A-Za-z0-9._~%+]{2,242}$", var.schedule_topic)) && !startswith(lower(var.schedule_topic), "goog")
    error_message = "schedule_topic must be a Pub/Sub topic name: 3-243 letters, digits or -._~%+, starting with a letter, not with 'goog'."
  }
}

variable "events_topic" {
  description = "Topic of external events (log sinks, remote functions' answers, Cloud Storage notifications), which triggers the external event listener."
  type        = string
  default     = "SCHEDULE_EXTERNAL_EVENTS"

  validation {
    condition     = can(regex("^[A-Za-z][-A-Za-z0-9._~%+]{2,242}$", var.events_topic)) && !startswith(lower(var.events_topic), "goog")
    error_message = "events_topic must be a Pub/Sub topic name: 3-243 letters, digits or -._~%+, starting with a letter, not with 'goog'."
  }

  validation {
    condition     = var.events_topic != var.schedule_topic
    error_message = "events_topic and schedule_topic must differ: each triggers its own function."
  }
}

variable "max_delivery_attempts" {
  description = "Deliveries of a message to a function before it goes to the function's dead-letter topic."
  type        = number
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be from 5 to 100 (Pub/Sub's limits)."
  }
}

variable "retry_minimum_backoff" {
  description = "Shortest wait before a push is retried after an error."
  type        = string
  default     = "10s"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?s$", var.retry_minimum_backoff))
    error_message = "retry_minimum_backoff must be a duration in seconds such as \"10s\" (0 to 600)."
  }
}

variable "retry_maximum_backoff" {
  description = "Longest wait before a push is retried (the backoff grows exponentially up to it)."
  type        = string
  default     = "600s"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?s$", var.retry_maximum_backoff))
    error_message = "retry_maximum_backoff must be a duration in seconds such as \"600s\" (0 to 600)."
  }
}

# ------------------------------------------------------------------ poller

variable "poller_schedule" {
  description = "When Cloud Scheduler calls the poller (unix-cron). Every minute by default: retry delays and lost messages wait for the next tick."
  type        = string
  default     = "* * * * *"

  validation {
    condition     = can(regex("^\\S+(\\s+\\S+){4}$", trimspace(var.poller_schedule)))
    error_message = "poller_schedule must be a unix-cron schedule of five fields, e.g. \"* * * * *\" (every minute) or \"*/5 * * * *\"."
  }
}

variable "poller_time_zone" {
  description = "Time zone of poller_schedule."
  type        = string
  default     = "Etc/UTC"
}

# ------------------------------------------------------------------ HMAC key

variable "hmac_secret_id" {
  description = "Id of an existing Secret Manager secret (in project) holding the HMAC key (at least 32 characters). null: the module creates function-flow-hmac-key with a random key."
  type        = string
  default     = null

  validation {
    condition     = var.hmac_secret_id == null || can(regex("^[A-Za-z0-9_-]{1,255}$", coalesce(var.hmac_secret_id, "-")))
    error_message = "hmac_secret_id must be a secret id (letters, digits, '_' or '-'), not a resource path."
  }
}

variable "hmac_key_version" {
  description = "Version of the secret exposed as FUNCTION_FLOW_HMAC_KEY: a number, or latest (read when an instance starts)."
  type        = string
  default     = "latest"

  validation {
    condition     = can(regex("^(latest|[1-9][0-9]*)$", var.hmac_key_version))
    error_message = "hmac_key_version must be a version number or \"latest\"."
  }
}

variable "hmac_previous_key_version" {
  description = "While rotating: the version of the same secret that holds the previous key, exposed as FUNCTION_FLOW_HMAC_PREVIOUS_KEY. null: none."
  type        = string
  default     = null

  validation {
    condition     = var.hmac_previous_key_version == null || can(regex("^[1-9][0-9]*$", coalesce(var.hmac_previous_key_version, "-")))
    error_message = "hmac_previous_key_version must be a version number (the key before the current one)."
  }
}

# ------------------------------------------------------------------ Firestore

variable "firestore_database" {
  description = "Firestore database of the runs."
  type        = string
  default     = "(default)"

  validation {
    condition     = var.firestore_database == "(default)" || can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.firestore_database))
    error_message = "firestore_database must be (default) or a database id: 4-63 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "create_firestore_database" {
  description = "Create firestore_database (Native mode). false: it exists already (a project's (default) database often does)."
  type        = bool
  default     = true
}

variable "firestore_location" {
  description = "Location of a database the module creates: a region or a multi-region such as eur3 or nam5. null: region."
  type        = string
  default     = null
}

variable "collection_prefix" {
  description = "Prefix of function_flow's collection names (FUNCTION_FLOW_COLLECTION_PREFIX)."
  type        = string
  default     = ""

  validation {
    condition     = !strcontains(var.collection_prefix, "/")
    error_message = "collection_prefix cannot contain '/'."
  }
}

variable "run_ttl" {
  description = "Create the TTL policies that let Firestore delete a run's documents once their expire_at timestamp has passed."
  type        = bool
  default     = true
}

variable "run_ttl_days" {
  description = "With run_ttl: days after its start when a run's documents expire (FUNCTION_FLOW_RUN_TTL_DAYS, which makes the store write expire_at)."
  type        = number
  default     = 30

  validation {
    condition     = var.run_ttl_days > 0 && var.run_ttl_days <= 36500
    error_message = "run_ttl_days must be a positive number of days, at most 36500 (100 years)."
  }
}

variable "blobs_bucket" {
  description = "Bucket (name or gs://name/prefix) for results too large for a Firestore record (FUNCTION_FLOW_BUCKET); the runtime account gets roles/storage.objectAdmin on it. null: none."
  type        = string
  default     = null

  validation {
    condition     = var.blobs_bucket == null || can(regex("^(gs://)?[a-z0-9][-a-z0-9_.]{1,61}[a-z0-9](/.*)?$", coalesce(var.blobs_bucket, "-")))
    error_message = "blobs_bucket must be a bucket name or gs://BUCKET/PREFIX."
  }
}

# ------------------------------------------------------------------ tracing

variable "tracing" {
  description = "Where the functions send their spans (FUNCTION_FLOW_TRACING): gcp (Cloud Trace: the runtime account gets roles/cloudtrace.agent), otlp, console or off. The source archive must install the exporter (function-flow deploy --build-only --tracing MODE writes its requirements.txt)."
  type        = string
  default     = "off"

  validation {
    condition     = contains(["off", "gcp", "otlp", "console"], var.tracing)
    error_message = "tracing must be off, gcp (Cloud Trace), otlp or console."
  }
}

# ------------------------------------------------------------------ logging

variable "bigquery_log_sink" {
  description = "Route BigQuery's completed-job log entries to events_topic (BigQueryFuture)."
  type        = bool
  default     = true
}

variable "log_sink_filter" {
  description = "Filter of that log sink; the default is Function Flow's."
  type        = string
  default     = "resource.type=\"bigquery_resource\" AND protoPayload.methodName=\"jobservice.jobcompleted\""
}
