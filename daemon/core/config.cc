#include "core/config.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

namespace csv::core {

bool LoadConfig(const std::string& path, Config* c, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = "cannot read " + path + ": " + std::strerror(errno) +
             " (write it as docs/operations.md shows, with \"nodes\" at least, or pass --config "
             "FILE)";
    return false;
  }
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    *error = path + " is not a JSON object (see docs/operations.md for the format)";
    return false;
  }
  try {
    c->node_id = j.value("node_id", c->node_id);
    c->key_file = j.value("key_file", c->key_file);
    c->state_dir = j.value("state_dir", c->state_dir);
    c->run_dir = j.value("run_dir", c->run_dir);
    c->control_socket = j.value("control_socket", c->control_socket);
    c->test_socket = j.value("test_socket", c->test_socket);
    c->group = j.value("group", c->group);
    c->workers = j.value("workers", c->workers);
    c->probe_threads = j.value("probe_threads", c->probe_threads);
    c->path_interval_ms = j.value("path_interval_ms", c->path_interval_ms);
    c->path_timeout_ms = j.value("path_timeout_ms", c->path_timeout_ms);
    c->call_timeout_ms = j.value("call_timeout_ms", c->call_timeout_ms);
    c->lease_ms = std::clamp(j.value("lease_ms", c->lease_ms), 300, 600000);
    c->lease_margin_ms = std::clamp(j.value("lease_margin_ms", c->lease_margin_ms), 0, 60000);
    c->realtime_priority = j.value("realtime_priority", c->realtime_priority);
    c->reclaim_grace_ms = std::clamp(j.value("reclaim_grace_ms", c->reclaim_grace_ms), 0, 3600000);
    c->path_fault_file = j.value("path_fault_file", c->path_fault_file);
    c->kernel = j.value("kernel", c->kernel);
    c->private_mounts = j.value("private_mounts", c->private_mounts);
    if (j.contains("nodes")) {
      c->nodes.clear();
      for (const auto& n : j.at("nodes")) {
        PeerAddress a;
        a.id = n.at("id").get<uint32_t>();
        a.host = n.at("addr").get<std::string>();
        a.port = n.value("port", uint16_t{7410});
        if (a.id == kNoNode) {
          *error = "node id 0 is not valid";
          return false;
        }
        c->nodes.push_back(a);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    *error = path + ": " + e.what();
    return false;
  }
  if (c->nodes.empty()) {
    *error = path + ": \"nodes\" must list the cluster's nodes";
    return false;
  }
  if (c->realtime_priority < 0 || c->realtime_priority > 99) {
    *error = "realtime_priority must be 0 (normal scheduling) or 1..99 (SCHED_RR)";
    return false;
  }
  if (c->workers < 1 || c->workers > 64) {
    *error = "workers must be 1..64";
    return false;
  }
  if (c->probe_threads < 1 || c->probe_threads > 64) {
    *error = "probe_threads must be 1..64";
    return false;
  }
  return true;
}

}  // namespace csv::core
