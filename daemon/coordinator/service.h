// The coordinator's metadata and redirected-I/O service for one volume.
//
// Executes the requests of include/uapi/linux/csvfs.h on the volume's lower
// filesystem (XFS reference, ext4 too), which it mounts in the daemon's own
// private mount namespace. Files are addressed only by file handles
// (name_to_handle_at / open_by_handle_at), never by client paths. File data
// is never cached here (O_DIRECT). Block-redirected I/O goes to the device
// with O_DIRECT, bounds-checked against the device size.
//
// Contract with the daemon core (daemon/cluster, daemon/main): the core
// checks epochs, authenticates peers and decides who is coordinator; it calls
// Handle() from a worker pool, never from the event loop, because Handle()
// blocks on disk I/O. Handle() is thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "abi/message.h"

namespace csv::coord {

// Sends a coordinator-initiated message (LAYOUT_RECALL, LEASE_BREAK,
// INVALIDATE) to a node and returns its reply; blocks until the node
// answered or its lease expired (then returns a REPLY with -ETIMEDOUT).
using NodeCall = std::function<abi::Message(uint32_t node, const abi::Message& msg)>;

struct ServiceOptions {
  std::string volume;     // volume name, for logs
  std::string device;     // this node's block device of the volume
  std::string mount_dir;  // where to mount the lower fs (private namespace)
  NodeCall call_node;     // may be empty in tests: no recalls are sent
};

class Service {
 public:
  virtual ~Service() = default;

  // Mounts the lower filesystem (running journal recovery) and returns the
  // service, or nullptr with *error set to a sentence a person understands.
  static std::unique_ptr<Service> Open(const ServiceOptions& options, std::string* error);

  // Executes one request from `from_node` and returns its REPLY (same
  // REQ_ID; ERRNO 0 or -errno; result attributes as the uapi header lists).
  virtual abi::Message Handle(const abi::Message& request, uint32_t from_node) = 0;

  // The root directory's file handle (packed struct csvfs_fh) and attributes.
  virtual std::vector<uint8_t> RootHandle() const = 0;

  // A node left the cluster: drop its opens, leases and locks (its layouts
  // stay until recalled or returned; see ServiceImpl::ForgetNode).
  virtual void ForgetNode(uint32_t node) = 0;

  // The reclaim grace period is over: every open a node still holds from
  // an earlier coordinator has been reclaimed (an OPEN with its OPEN_ID),
  // so files that lost their last name and that nobody reclaimed are
  // removed. Returns how many. Until then none is removed.
  virtual size_t EndGrace() = 0;
  virtual uint64_t RemovedOrphans() const = 0;

  // Flushes and unmounts the lower filesystem (planned move, shutdown).
  virtual void Close() = 0;
};

}  // namespace csv::coord
