// Where Diffuse finds the read-only files it ships with: the CLIP tokenizer
// vocabulary (models/tokenizers/clip) and the built-in demo model
// (models/demo). One look-up for every caller, so an installed copy and a
// development build agree on what they read.
//
// The places, in order (each holds the same layout, `models/...`):
//  1. <directory of the running executable>/../share/diffuse: an installed
//     copy (`cmake --install`, the .deb), found from /proc/self/exe, so the
//     install prefix can be anything and can be moved after installing.
//  2. The source tree the program was compiled from, but only while the
//     executable is still inside the build tree it was built in (the
//     development `build/diffuse`, the test binaries). A copy anywhere else
//     never looks at the source tree, so an installed program cannot depend
//     on it by accident, and the install test proves that by construction.
// Before both: $DIFFUSE_DATA_DIR when set, for a host process whose
// executable is not Diffuse's (the Python module sets it to the data of the
// build or install it belongs to: python/diffuse/__init__.py).
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace diffuse {

// The roots above that apply to this process, in search order (they need not
// exist). The first is absent when /proc/self/exe cannot be read.
std::vector<std::filesystem::path> data_dirs();

// The first root that exists and holds `models/`; nullopt when none does.
std::optional<std::filesystem::path> data_dir();

// root / relative for the first root where that exists; nullopt when none.
std::optional<std::filesystem::path> find_data(const std::string& relative);

// "looked in A, B" (for error messages when a file is not found).
std::string data_search_note();

}  // namespace diffuse
