# The Firestore database of runs, its composite indexes, and the TTL policy
# that deletes old runs.
#
# The engine's queries use single-field indexes, which Firestore makes by
# itself. The lists of runs filtered by job and/or status, newest first (the
# dashboard, `function-flow status --job/--status`), need the composite
# indexes below: function_flow/store/indexes.py declares the same, and
# tests/test_firestore_indexes.py compares them with what the store queries.

resource "google_firestore_database" "database" {
  count = var.create_firestore_database ? 1 : 0

  project     = var.project
  name        = var.firestore_database
  location_id = coalesce(var.firestore_location, var.region)
  type        = "FIRESTORE_NATIVE"
  # `terraform destroy` leaves the runs where they are.
  deletion_policy = "ABANDON"

  depends_on = [google_project_service.api]
}

locals {
  firestore_database = var.create_firestore_database ? google_firestore_database.database[0].name : var.firestore_database

  # Equality on these fields, then created_at descending (Firestore adds
  # __name__ in the last field's direction).
  run_list_indexes = {
    for filtered in [["job_name"], ["status"], ["job_name", "status"]] : join("-", filtered) => {
      collection = "${var.collection_prefix}runs"
      fields = concat([for field in filtered : { field_path = field, order = "ASCENDING" }],
      [{ field_path = "created_at", order = "DESCENDING" }])
    }
  }

  # A TTL policy deletes one document at a time, never its subcollections:
  # every document of a run carries expire_at (FUNCTION_FLOW_RUN_TTL_DAYS),
  # and each collection group has its own policy (store/expiry.py lists them).
  ttl_collection_groups = concat([for name in ["runs", "triggers", "deliveries"] : "${var.collection_prefix}${name}"],
  ["tasks", "slots", "context"])
}

# Firestore deletes a document some time (typically within a day) after the
# timestamp in its `expire_at` field; a document without that field is kept.
resource "google_firestore_field" "expire_at" {
  for_each = var.run_ttl ? toset(local.ttl_collection_groups) : toset([])

  project    = var.project
  database   = local.firestore_database
  collection = each.key
  field      = "expire_at"

  ttl_config {}

  # No single-field index on expire_at: nothing queries it, and an index of
  # steadily increasing timestamps is a write hotspot.
  index_config {}
}

resource "google_firestore_index" "runs" {
  for_each = local.run_list_indexes

  project     = var.project
  database    = local.firestore_database
  collection  = each.value.collection
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value.fields

    content {
      field_path = fields.value.field_path
      order      = fields.value.order
    }
  }

  depends_on = [google_project_service.api]
}
