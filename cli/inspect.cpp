#include "cli/inspect.hpp"
namespace pw::cli {
int run_inspect(const InspectOptions&) { return 1; }  // implementation pending
}  // namespace pw::cli
