// Family names come from the family table (family_spec.h).
#include "models/family.h"

#include "models/family_spec.h"

namespace diffuse {

const char* family_name(Family f) { return family_spec(f).name.c_str(); }

Family family_from_name(const std::string& s) { return family_spec_named(s).family; }

// prediction_name() is defined in sampling/prediction.h.

}  // namespace diffuse
