// csvd: the csvfs cluster daemon. See docs/daemon.md.
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio.hpp>
#include <csignal>
#include <cstring>
#include <iostream>

#include "core/config.h"
#include "core/daemon.h"
#include "core/log.h"

namespace {

// The lower filesystems are mounted only in csvd's own mount namespace, so
// that nothing else on the node sees (or keeps busy) the coordinator's
// mount, and a killed daemon's mounts go away with it.
bool PrivateMountNamespace(std::string* error) {
  if (unshare(CLONE_NEWNS) != 0) {
    *error = std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno);
    return false;
  }
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    *error = std::string("mount --make-rprivate /: ") + std::strerror(errno);
    return false;
  }
  return true;
}

// The event loop renews the kernel's lease; a renewal later than lease_ms
// stops direct I/O on this node. In a guest with one CPU, Corosync
// (SCHED_RR 99) and the workload can hold a normal-priority thread off the
// CPU for seconds. So the loop thread runs SCHED_RR, like corosync and
// sanlock; SCHED_RESET_ON_FORK starts the worker threads (the metadata
// service, mounts, FIFREEZE) and any child at normal priority. Called
// before any thread exists. Failure (no CAP_SYS_NICE, an RT-limited
// cgroup) only warns: csvd works, with a less punctual lease.
void RunLoopRealtime(int priority) {
  if (priority == 0) return;
  sched_param param{};
  param.sched_priority = priority;
  if (sched_setscheduler(0, SCHED_RR | SCHED_RESET_ON_FORK, &param) != 0)
    LOG(kWarning) << "cannot run the event loop SCHED_RR " << priority << ": "
                  << std::strerror(errno) << "; lease renewals may be late under load";
}

// Earlier builds used /etc/csvfs/{csvd.json,cluster.key}: the legacy file
// is read, with a warning, while the new default path does not exist.
void FallBackToLegacy(std::string* path, const char* default_path, const char* legacy_path) {
  if (*path != default_path || access(path->c_str(), F_OK) == 0 || access(legacy_path, F_OK) != 0)
    return;
  std::cerr << "csvd: warning: " << *path << " does not exist; reading " << legacy_path
            << " (deprecated: move it to " << *path << ")\n";
  *path = legacy_path;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"csvd - the csvfs cluster daemon"};
  std::string config_path = csv::core::kDefaultConfigPath;
  bool foreground = false;
  bool debug = false;
  csv::core::Config config;
  std::string key, state_dir, run_dir, control, test_socket, fault;
  app.add_option("--config,-c", config_path, "configuration file (JSON)")->capture_default_str();
  app.add_flag("--foreground,-f", foreground,
               "stay in the foreground (the only mode; for systemd)");
  app.add_flag("--debug", debug, "log debug messages");
  app.add_option("--key-file", key, "cluster key file (overrides the config)");
  app.add_option("--state-dir", state_dir, "persistent state directory");
  app.add_option("--run-dir", run_dir, "runtime directory (sockets, mounts)");
  app.add_option("--control-socket", control, "control socket path");
  app.add_option("--test-socket", test_socket, "enable the test channel on this Unix socket");
  app.add_option("--path-fault-file", fault, "test: path probes fail while this file exists");
  CLI11_PARSE(app, argc, argv);
  (void)foreground;

  std::string error;
  FallBackToLegacy(&config_path, csv::core::kDefaultConfigPath, csv::core::kLegacyConfigPath);
  if (!csv::core::LoadConfig(config_path, &config, &error)) {
    std::cerr << "csvd: " << error << "\n";
    return 2;
  }
  FallBackToLegacy(&config.key_file, csv::core::kDefaultKeyPath, csv::core::kLegacyKeyPath);
  if (!key.empty()) config.key_file = key;
  if (!state_dir.empty()) config.state_dir = state_dir;
  if (!run_dir.empty()) config.run_dir = run_dir;
  if (!control.empty()) config.control_socket = control;
  if (!test_socket.empty()) config.test_socket = test_socket;
  if (!fault.empty()) config.path_fault_file = fault;
  if (debug) csv::core::SetLogLevel(csv::core::Level::kDebug);
  if (geteuid() != 0) {
    std::cerr << "csvd: must run as root (mounts, block devices, netlink)\n";
    return 2;
  }
  if (config.private_mounts && !PrivateMountNamespace(&error)) {
    std::cerr << "csvd: " << error << "\n";
    return 1;
  }
  std::signal(SIGPIPE, SIG_IGN);

  RunLoopRealtime(config.realtime_priority);
  boost::asio::io_context io;
  csv::core::Daemon daemon(io, config);
  if (!daemon.Start(&error)) {
    LOG(kError) << error;
    return 1;
  }
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int sig) {
    if (ec) return;
    LOG(kInfo) << "signal " << sig << ": shutting down";
    daemon.Stop();
    io.stop();
  });
  io.run();
  daemon.Stop();
  LOG(kInfo) << "csvd stopped";
  return 0;
}
