# A three-node Supervisor cluster on PostgreSQL (see docs/cluster.md).
#
# Before running: build the image (deploy/Dockerfile), create the schema once with
# `supervisor store init --store URL`, and store the URL and the cluster cookie in
# Nomad variables:
#   nomad var put nomad/jobs/supervisor store_url='postgres://supervisor:PASSWORD@db:5432/supervisor' \
#     cookie="$(head -c 32 /dev/urandom | base64)"
# Then: nomad job run deploy/nomad/supervisor.nomad.hcl
#
# Each allocation is one node. Its id is the allocation index, so a replacement
# allocation takes over its predecessor's identity and reclaims its leases at once; it
# announces the host address Nomad gave its cluster port. Stopping an allocation sends
# SIGTERM, which drains the node.
job "supervisor" {
  type = "service"

  group "nodes" {
    count = 3

    update {
      max_parallel     = 1
      min_healthy_time = "10s"
    }

    network {
      port "grpc" { to = 50051 }
      port "cluster" { to = 4697 }
    }

    service {
      name     = "supervisor"
      port     = "grpc"
      provider = "nomad"
      check {
        type     = "grpc"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "supervisor" {
      driver       = "docker"
      kill_timeout = "30s"
      kill_signal  = "SIGTERM"

      config {
        image = "supervisor:latest"
        ports = ["grpc", "cluster"]
        args  = ["up", "--join", "--listen", "0.0.0.0:50051", "--cluster-listen", "0.0.0.0:4697"]
      }

      template {
        destination = "secrets/env"
        env         = true
        data        = <<EOT
{{ with nomadVar "nomad/jobs/supervisor" }}
SUPERVISOR_STORE__URL={{ .store_url }}
SUPERVISOR_CLUSTER__COOKIE={{ .cookie }}
{{ end }}
SUPERVISOR_AUTH__ENABLED=true
EOT
      }

      env {
        SUPERVISOR_NODE__ID           = "supervisor-${NOMAD_ALLOC_INDEX}"
        SUPERVISOR_CLUSTER__ADVERTISE = "${NOMAD_ADDR_cluster}"
        SUPERVISOR_LOG__FORMAT        = "json"
        SUPERVISOR_DATA_DIR           = "${NOMAD_ALLOC_DIR}/data"
      }

      resources {
        cpu    = 1000
        memory = 512
      }
    }
  }
}
