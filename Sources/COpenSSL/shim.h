// OpenSSL's libcrypto (the one libcurl already loads) for the agent keys' Ed25519 and SHA-256.
#ifndef SONDE_COPENSSL_SHIM_H
#define SONDE_COPENSSL_SHIM_H

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/err.h>

#endif
