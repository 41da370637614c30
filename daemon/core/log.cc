#include "core/log.h"

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
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

// journald stamps every line itself; elsewhere (a file, a terminal, the
// lab) each line starts with the UTC wall-clock time in milliseconds, so
// that logs of several nodes and fio's completion logs can be lined up.
bool StampLines() {
  static const bool stamp = std::getenv("JOURNAL_STREAM") == nullptr;
  return stamp;
}

std::string Stamp() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  char buf[96];
  snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ ", t.tm_year + 1900, t.tm_mon + 1,
           t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, static_cast<int>(ts.tv_nsec / 1000000));
  return buf;
}

}  // namespace

void SetLogNode(uint32_t node) { g_node = node; }
void SetLogLevel(Level level) { g_level = static_cast<int>(level); }

void LogLine(Level level, std::string_view volume, uint64_t epoch, const std::string& text) {
  if (static_cast<int>(level) < g_level) return;
  std::string line = StampLines() ? Stamp() : std::string();
  line += "csvd[node " + std::to_string(g_node.load()) + "]";
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
