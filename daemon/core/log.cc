#include "core/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>

namespace csv::core {
namespace {

std::atomic<uint32_t> g_node{0};
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::mutex g_mutex;

const char* LevelName(Level l) {
  switch (l) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarning:
      return "warning";
    case Level::kError:
      return "error";
  }
  return "?";
}

}  // namespace

void SetLogNode(uint32_t node) { g_node = node; }
void SetLogLevel(Level level) { g_level = static_cast<int>(level); }

void LogLine(Level level, std::string_view volume, uint64_t epoch, const std::string& text) {
  if (static_cast<int>(level) < g_level) return;
  std::string line = "csvd[node " + std::to_string(g_node.load()) + "]";
  if (!volume.empty()) line += " volume=" + std::string(volume) + " epoch=" + std::to_string(epoch);
  line += " ";
  line += LevelName(level);
  line += ": ";
  line += text;
  line += "\n";
  std::lock_guard<std::mutex> lock(g_mutex);
  (void)!write(STDERR_FILENO, line.data(), line.size());
}

void LogException(const char* what, std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    LOG(kWarning) << what << ": " << ex.what();
  }
}

}  // namespace csv::core
