// The Python module's generation parameters: the keyword dictionary that
// diffuse.Pipeline.__call__ (python/diffuse/_pipeline.py) builds, read into
// the engine's GenerationParams. Every key is consumed once; a key left over
// is an unknown parameter (ValueError naming it), a value of the wrong kind
// is a ValueError naming the parameter.
#pragma once
#include <string>
#include <vector>

#include <pybind11/pybind11.h>

#include "pipeline/pipeline.h"

namespace diffuse::python {

struct CallParams {
  GenerationParams params;
  // The prompt as written, LoRA tags included, when tags were taken out of it
  // ("" otherwise): the infotext keeps it, as the CLI's does.
  std::string written_prompt;
  // Not fatal, for the result's warnings (an ignored LoRA argument, a tag
  // that is not a LoRA).
  std::vector<std::string> warnings;
};

// Reads `kwargs` (GIL held). LoRAs named in the prompt (<lora:name:w>) or in
// "loras" are resolved to files here, before any work is done.
CallParams read_call_params(const pybind11::dict& kwargs);

}  // namespace diffuse::python
