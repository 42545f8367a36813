#pragma once
// The emulator's self-test: small kernels, each either correct or carrying one planted bug of
// a class the emulator must catch (tests/gpu/test_simt.py runs every case).

#include <string>
#include <utility>
#include <vector>

namespace fastgen::simt {

// (name, what the case shows); names starting with "bug_" must raise, the others must run.
std::vector<std::pair<std::string, std::string>> selftest_cases();

// Runs a case and returns what its kernel wrote (raises the emulator's error for a bug case).
std::vector<float> run_selftest(const std::string& name);

}  // namespace fastgen::simt
