// Stands in for daemon/coordinator when it is not part of the build: a
// node elected coordinator reports that it cannot serve, and the election
// moves on (OPEN_FAILED).
#include "coordinator/service.h"

namespace csv::coord {

std::unique_ptr<Service> Service::Open(const ServiceOptions&, std::string* error) {
  *error = "csvd was built without the coordinator service (daemon/coordinator)";
  return nullptr;
}

}  // namespace csv::coord
