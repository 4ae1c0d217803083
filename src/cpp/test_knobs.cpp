#include "test_knobs.hpp"

#include <cstdlib>
#include <set>
#include <string>

namespace pktstat {

bool forced_missing(std::string_view feature) {
	static const std::set<std::string, std::less<>> missing = [] {
		std::set<std::string, std::less<>> s;
		const char *env = std::getenv(kForceMissingEnv);
		std::string_view v = env ? env : "";
		while (!v.empty()) {
			size_t comma = v.find(',');
			std::string_view name = v.substr(0, comma);
			if (!name.empty()) s.emplace(name);
			if (comma == std::string_view::npos) break;
			v.remove_prefix(comma + 1);
		}
		return s;
	}();
	return missing.find(feature) != missing.end();
}

} // namespace pktstat
