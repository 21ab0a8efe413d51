// The system libyaml (Debian libyaml-dev), found through pkg-config by SwiftPM. Only the parser
// API is used: SondeYAML builds its own node tree from the event stream.
#ifndef SONDE_CYAML_SHIM_H
#define SONDE_CYAML_SHIM_H

#include <yaml.h>

#endif
