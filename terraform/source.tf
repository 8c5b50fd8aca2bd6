# The source archive every function is built from (main.py, requirements.txt
# and function_flow): a local zip the module uploads, or an object already in
# Cloud Storage.

resource "google_storage_bucket" "source" {
  count = var.source_bucket == null ? 1 : 0

  project                     = var.project
  name                        = "${var.project}-${var.name_prefix}function-flow-source"
  location                    = var.region
  labels                      = var.labels
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  depends_on = [google_project_service.api]
}

resource "google_storage_bucket_object" "source" {
  count = var.source_archive == null ? 0 : 1

  bucket = local.source_bucket
  # A new archive is a new object, and so a new build of every function.
  name         = "${var.name_prefix}function-flow/source-${filemd5(var.source_archive)}.zip"
  source       = var.source_archive
  content_type = "application/zip"
}

locals {
  source_bucket = var.source_bucket != null ? var.source_bucket : google_storage_bucket.source[0].name
  source_object = var.source_object != null ? var.source_object : google_storage_bucket_object.source[0].name
}
