variable "project" {
  description = "Google Cloud project id."
  type        = string
}

variable "region" {
  description = "Region, e.g. europe-west1."
  type        = string
}

variable "source_archive" {
  description = "Absolute path of the zip of the source directory (see README.md)."
  type        = string
}

variable "operators" {
  description = "IAM members who may start and control runs, e.g. [\"user:you@example.com\"]."
  type        = list(string)
  default     = []
}

variable "create_firestore_database" {
  description = "false when the project's (default) Firestore database exists already."
  type        = bool
  default     = true
}
