# A three-node Supervisor cluster on PostgreSQL (docs/deploy.md, docs/cluster.md), with
# the Docker driver and Consul for service registration and gRPC health checks (Nomad's
# own service provider checks only HTTP and TCP).
#
# Before running:
#   1. Build and push the image (deploy/Dockerfile); pass it with -var image=...
#   2. Create the schema once: supervisor store init --store 'postgres://...'
#   3. Put the store URL and the cluster cookie in the job's Nomad variable (only this
#      job's tasks can read it):
#        nomad var put nomad/jobs/supervisor \
#          store_url='postgres://supervisor:PASSWORD@db.internal:5432/supervisor' \
#          cookie="$(head -c 32 /dev/urandom | base64)"
#      (With Vault instead: replace the nomadVar blocks below by
#      {{ with secret "kv/data/supervisor" }}{{ .Data.data.store_url }}{{ end }} and give
#      the task a vault block.)
# Then: nomad job run -var image=registry.example.com/supervisor:0.1.0 deploy/nomad/supervisor.nomad.hcl
#
# Each allocation is one node. Its id is supervisor-<allocation index>, so a replacement
# allocation takes over its predecessor's identity and reclaims its leases at once; it
# announces the host address and port Nomad gave its cluster port. Stopping an
# allocation deregisters its services, waits shutdown_delay, then sends SIGTERM, which
# drains the node (node.drain_timeout, 10s, well within kill_timeout).

variable "image" {
  type        = string
  description = "The image built from deploy/Dockerfile (the claude target to run Claude Code CLI providers)."
  default     = "supervisor:0.1.0"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "nodes" {
  type        = number
  description = "How many Supervisor nodes (allocations, one per Nomad client)."
  default     = 3
}

job "supervisor" {
  type        = "service"
  datacenters = var.datacenters

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  # Rolling upgrades: one node at a time; the next starts only once the new one has
  # passed its checks for min_healthy_time; a deployment that does not get healthy is
  # rolled back to the last good version. No canaries: a canary would take the node id
  # of the allocation it replaces while that one still runs, and be refused.
  update {
    max_parallel      = 1
    health_check      = "checks"
    min_healthy_time  = "15s"
    healthy_deadline  = "3m"
    progress_deadline = "10m"
    auto_revert       = true
    stagger           = "30s"
  }

  group "nodes" {
    count = var.nodes

    # One node per Nomad client: losing a machine costs one node.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    # Leave Consul (and so new clients) before SIGTERM starts the drain.
    shutdown_delay = "5s"

    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    # The data directory (the first admin key, the Claude CLI's worktrees) is in the
    # allocation directory: scratch, since the durable state is in PostgreSQL.
    ephemeral_disk {
      size   = 20480
      sticky = true
    }

    network {
      port "grpc" {
        to = 50051
      }
      port "http" {
        to = 50052
      }
      port "cluster" {
        to = 4697
      }
    }

    service {
      name     = "supervisor"
      provider = "consul"
      port     = "grpc"
      tags     = ["grpc"]

      # grpc.health.v1 (always served, no token): SERVING while the node's supervision
      # tree is whole, NOT_SERVING while it drains.
      check {
        name         = "grpc-health"
        type         = "grpc"
        port         = "grpc"
        grpc_use_tls = false
        interval     = "10s"
        timeout      = "2s"

        check_restart {
          limit = 6
          grace = "2m"
        }
      }
    }

    # Every node's /metrics, for Prometheus (consul_sd_configs, service supervisor-metrics;
    # job "supervisor" as deploy/prometheus/alerts.yml expects).
    service {
      name     = "supervisor-metrics"
      provider = "consul"
      port     = "http"
      tags     = ["metrics"]

      check {
        name     = "healthz"
        type     = "http"
        port     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "supervisor" {
      driver       = "docker"
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      config {
        image           = var.image
        ports           = ["grpc", "http", "cluster"]
        args            = ["up", "--join", "--config", "${NOMAD_SECRETS_DIR}/supervisor.toml"]
        readonly_rootfs = true
        cap_drop        = ["ALL"]
        security_opt    = ["no-new-privileges"]

        mount {
          type     = "tmpfs"
          target   = "/tmp"
          readonly = false
          tmpfs_options {
            size = 1073741824
          }
        }
      }

      # The node's configuration, with the store URL from the job's Nomad variable: in
      # the secrets directory (not readable through the Nomad API's file system calls).
      # A change restarts the task, which drains the node first.
      template {
        destination = "secrets/supervisor.toml"
        perms       = "0440"
        uid         = 10001
        gid         = 10001
        change_mode = "restart"
        data        = <<-EOT
          # See supervisor.example.toml (`supervisor config default`) for every key.
          data_dir = "{{ env "NOMAD_ALLOC_DIR" }}/data"

          [server]
          listen = "0.0.0.0:50051"
          http_listen = "0.0.0.0:50052"

          [store]
          url = {{ with nomadVar "nomad/jobs/supervisor" }}{{ .store_url | toJSON }}{{ end }}

          [node]
          id = "supervisor-{{ env "NOMAD_ALLOC_INDEX" }}"
          drain_timeout = "10s"

          [cluster]
          listen = "0.0.0.0:4697"
          advertise = "{{ env "NOMAD_ADDR_cluster" }}"
          cookie_file = "{{ env "NOMAD_SECRETS_DIR" }}/cookie"

          [auth]
          # Required beyond loopback. The first start writes an admin key to
          # <data_dir>/admin.key (docs/deploy.md says how to fetch it).
          enabled = true

          [log]
          format = "json"
        EOT
      }

      template {
        destination = "secrets/cookie"
        perms       = "0440"
        uid         = 10001
        gid         = 10001
        change_mode = "restart"
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/supervisor" }}{{ .cookie }}{{ end }}
        EOT
      }

      resources {
        cpu        = 2000
        memory     = 1024
        memory_max = 4096
      }
    }
  }
}
