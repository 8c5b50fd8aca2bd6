# The Firestore database of runs, and the TTL policy that deletes old ones.
#
# function_flow needs no composite index: its queries use single-field
# indexes, which Firestore makes by itself.

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
