#include "test_knobs.hpp"

#include <cstdlib>
#include <stdexcept>

namespace pktstat {
namespace {

std::shared_ptr<const TestFaults> g_faults = std::make_shared<const TestFaults>();

[[noreturn]] void bad(std::string_view item, const char *why) {
	throw std::invalid_argument(std::string(kTestFaultsEnv) + ": " + std::string(item) + ": " + why);
}

double number(std::string_view item, std::string_view value) {
	const std::string v(value);
	char *end = nullptr;
	const double d = std::strtod(v.c_str(), &end);
	if (v.empty() || *end != '\0')
		bad(item, "not a number");
	return d;
}

int integer(std::string_view item, std::string_view value) {
	const std::string v(value);
	char *end = nullptr;
	const long n = std::strtol(v.c_str(), &end, 10);
	if (v.empty() || *end != '\0' || n < -1 || n > 1000)
		bad(item, "not a step number");
	return static_cast<int>(n);
}

} // namespace

TestFaults TestFaults::parse(std::string_view spec) {
	TestFaults f;
	while (!spec.empty()) {
		const size_t comma = spec.find(',');
		const std::string_view item = spec.substr(0, comma);
		spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
		if (item.empty())
			continue;
		const size_t eq = item.find('=');
		const std::string_view key = item.substr(0, eq);
		const std::string_view value =
		    eq == std::string_view::npos ? std::string_view() : item.substr(eq + 1);
		if (eq == std::string_view::npos)
			bad(item, "expected NAME=VALUE");
		if (key == "missing") {
			std::string_view names = value;
			while (!names.empty()) {
				const size_t plus = names.find('+');
				if (plus != 0)
					f.missing.emplace(names.substr(0, plus));
				names = plus == std::string_view::npos ? std::string_view()
				                                       : names.substr(plus + 1);
			}
		} else if (key == "fail_attach_at") {
			f.fail_attach_at = integer(item, value);
		} else if (key == "xdp_buff_len") {
			if (value != "0" && value != "1")
				bad(item, "expected 0 or 1");
			f.xdp_buff_len = value == "1";
		} else if (key == "progress_delay") {
			f.progress_delay = number(item, value);
		} else {
			bad(item, "unknown fault");
		}
	}
	return f;
}

std::shared_ptr<const TestFaults> load_test_faults() {
	const char *env = std::getenv(kTestFaultsEnv);
	auto f = std::make_shared<const TestFaults>(TestFaults::parse(env ? env : ""));
	std::atomic_store(&g_faults, f);
	return f;
}

std::shared_ptr<const TestFaults> test_faults() {
	return std::atomic_load(&g_faults);
}

bool forced_missing(std::string_view feature) {
	const auto f = test_faults();
	return f->missing.find(feature) != f->missing.end();
}

bool injected_attach_fault(int step) {
	return step == test_faults()->fail_attach_at;
}

} // namespace pktstat
