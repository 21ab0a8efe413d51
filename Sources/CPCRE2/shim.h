// PCRE2, 8-bit code units (UTF-8): the engine of probe scripts' regular expressions. Swift sees
// the width-suffixed names (pcre2_compile_8, …); the unsuffixed ones are C macros.
#ifndef SONDE_CPCRE2_SHIM_H
#define SONDE_CPCRE2_SHIM_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#endif
