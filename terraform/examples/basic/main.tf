# samples/main.py on Google Cloud: its six functions, its remote function
# regional_pricing (triggered by PRICING_REQUESTS), and everything they need.

provider "google" {
  project = var.project
  region  = var.region
}

module "function_flow" {
  source = "../.."

  project        = var.project
  region         = var.region
  source_archive = var.source_archive

  # samples/main.py: @remote.function(topic="PRICING_REQUESTS") def regional_pricing
  remote_functions = {
    regional_pricing = { topic = "PRICING_REQUESTS" }
  }

  # Who may start runs and pause, resume or cancel them.
  invokers = {
    start   = var.operators
    control = var.operators
  }

  create_firestore_database = var.create_firestore_database
}
