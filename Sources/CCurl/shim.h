// Swift cannot call C variadic functions, so each curl_easy_setopt / curl_easy_getinfo argument
// type gets one small non-variadic wrapper here (as swift-corelibs-foundation does).
#ifndef SONDE_CCURL_SHIM_H
#define SONDE_CCURL_SHIM_H

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/err.h>
#include <string.h>
#include <time.h>

typedef size_t (*sonde_curl_data_callback)(char *buffer, size_t size, size_t count, void *context);
typedef int (*sonde_curl_xferinfo_callback)(void *context, curl_off_t dltotal, curl_off_t dlnow,
                                            curl_off_t ultotal, curl_off_t ulnow);

static inline CURLcode sonde_curl_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode sonde_curl_setopt_off_t(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode sonde_curl_setopt_pointer(CURL *handle, CURLoption option, const void *value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode sonde_curl_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode sonde_curl_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode sonde_curl_setopt_data_callback(CURL *handle, CURLoption option, sonde_curl_data_callback value) {
    return curl_easy_setopt(handle, option, value);
}
typedef int (*sonde_curl_prereq_callback)(void *context, char *primary_ip, char *local_ip, int primary_port, int local_port);
static inline CURLcode sonde_curl_setopt_prereq_callback(CURL *handle, sonde_curl_prereq_callback value) {
    return curl_easy_setopt(handle, CURLOPT_PREREQFUNCTION, value);
}
static inline CURLcode sonde_curl_setopt_xferinfo_callback(CURL *handle, sonde_curl_xferinfo_callback value) {
    return curl_easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, value);
}
static inline CURLcode sonde_curl_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}
static inline CURLcode sonde_curl_getinfo_off_t(CURL *handle, CURLINFO info, curl_off_t *value) {
    return curl_easy_getinfo(handle, info, value);
}
static inline CURLcode sonde_curl_getinfo_string(CURL *handle, CURLINFO info, char **value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLcode sonde_curl_getinfo_slist(CURL *handle, CURLINFO info, struct curl_slist **value) {
    return curl_easy_getinfo(handle, info, value);
}
static inline CURLcode sonde_curl_getinfo_socket(CURL *handle, curl_socket_t *value) {
    return curl_easy_getinfo(handle, CURLINFO_ACTIVESOCKET, value);
}
static inline CURLSHcode sonde_curl_share_setopt_long(CURLSH *share, CURLSHoption option, long value) {
    return curl_share_setopt(share, option, value);
}

// The certificate chain a TLS handshake verified (the path OpenSSL built to a trust anchor), not
// every certificate the server presented: a server that also sends an expired cross-sign the
// path does not use (Let's Encrypt's DST Root CA X3, 2021) is healthy, and `cert_valid_for`
// must say so. Filled by OpenSSL's verify callback, on the thread doing the handshake.
typedef struct {
    long long earliest_not_after; // seconds since 1970, of the earliest-expiring certificate
    int certificates;             // in the chain; 0 while no handshake was seen
    char earliest_subject[256];   // that certificate's subject, one line
    long long tls_started_ns;     // CLOCK_MONOTONIC when the latest TLS set-up began (its TCP connection was up); 0 before
} sonde_tls_chain;

static inline long long sonde_asn1_time_epoch(const ASN1_TIME *time) {
    int days = 0, seconds = 0;
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    int ok = epoch != NULL && ASN1_TIME_diff(&days, &seconds, epoch, time);
    ASN1_TIME_free(epoch);
    return ok ? (long long)days * 86400 + seconds : 0;
}

static int sonde_tls_verify(int preverify_ok, X509_STORE_CTX *store) {
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    sonde_tls_chain *record = ssl ? (sonde_tls_chain *)SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(store);
    // Called once per certificate as the chain is checked, and on each error: the last call
    // sees the chain as built, so each call overwrites.
    if (record != NULL && chain != NULL) {
        int count = sk_X509_num(chain);
        record->certificates = 0;
        for (int i = 0; i < count; i++) {
            X509 *certificate = sk_X509_value(chain, i);
            const ASN1_TIME *not_after = certificate ? X509_get0_notAfter(certificate) : NULL;
            if (not_after == NULL) continue;
            long long when = sonde_asn1_time_epoch(not_after);
            if (record->certificates == 0 || when < record->earliest_not_after) {
                record->earliest_not_after = when;
                X509_NAME_oneline(X509_get_subject_name(certificate), record->earliest_subject, sizeof record->earliest_subject);
            }
            record->certificates++;
        }
    }
    return preverify_ok;
}

static CURLcode sonde_tls_context(CURL *handle, void *context, void *record) {
    (void)handle;
    // libcurl makes a TLS context per connection, once its TCP connection is up: a handshake
    // that fails or stalls is timed as `tls` from the latest one (libcurl reports no connect
    // time for it), which is the one under way on a redirect's new connection too.
    sonde_tls_chain *chain_record = (sonde_tls_chain *)record;
    if (chain_record != NULL) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        chain_record->tls_started_ns = (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
    }
    SSL_CTX *ssl_context = (SSL_CTX *)context;
    SSL_CTX_set_app_data(ssl_context, record);
    SSL_CTX_set_verify(ssl_context, SSL_CTX_get_verify_mode(ssl_context), sonde_tls_verify);
    return CURLE_OK;
}

/// Records the verified chain of the handle's TLS handshakes in `record` (which must outlive
/// the handle's connections: use it only with connections that are not reused).
static inline CURLcode sonde_curl_track_tls_chain(CURL *handle, sonde_tls_chain *record) {
    memset(record, 0, sizeof *record);
    CURLcode code = curl_easy_setopt(handle, CURLOPT_SSL_CTX_FUNCTION, sonde_tls_context);
    return code == CURLE_OK ? curl_easy_setopt(handle, CURLOPT_SSL_CTX_DATA, record) : code;
}


// Loads a probe's TLS files as libcurl will (OpenSSL, PEM), so that `validate` and probe loading
// catch a file that is not a certificate, a key that is not the certificate's, or an encrypted
// key, instead of every run failing. Returns 0 when they load; else 1 (ca_file), 2 (cert),
// 3 (key) or 4 (key does not match cert), with OpenSSL's reason in `reason`.
static int sonde_tls_no_passphrase(char *buffer, int size, int flag, void *data) {
    (void)buffer; (void)size; (void)flag; (void)data;
    return -1; // an encrypted key fails here instead of prompting on the agent's terminal
}

static inline int sonde_tls_check_files(const char *ca_file, const char *cert, const char *key, char *reason, size_t size) {
    int failed = 0;
    ERR_clear_error();
    SSL_CTX *context = SSL_CTX_new(TLS_client_method());
    if (context == NULL) { snprintf(reason, size, "out of memory"); return 1; }
    SSL_CTX_set_default_passwd_cb(context, sonde_tls_no_passphrase);
    if (ca_file != NULL && SSL_CTX_load_verify_locations(context, ca_file, NULL) != 1) failed = 1;
    else if (cert != NULL && SSL_CTX_use_certificate_chain_file(context, cert) != 1) failed = 2;
    else if (key != NULL && SSL_CTX_use_PrivateKey_file(context, key, SSL_FILETYPE_PEM) != 1) failed = 3;
    else if (cert != NULL && key != NULL && SSL_CTX_check_private_key(context) != 1) failed = 4;
    reason[0] = 0;
    if (failed) {
        unsigned long error = ERR_peek_last_error();
        if (error != 0) ERR_error_string_n(error, reason, size);
    }
    ERR_clear_error();
    SSL_CTX_free(context);
    return failed;
}

// STARTTLS for `tcp` steps: libcurl's connect-only connections cannot switch to TLS part-way, so
// the upgrade is OpenSSL's, on the socket libcurl connected, with the same choices libcurl makes
// for requests: its CA file and directory unless a probe names one, peer and host name checks
// unless `insecure`, SNI for names (not addresses), the probe's client certificate and key, and
// the verified chain recorded by `sonde_tls_verify` into `record`, which must live as long as
// the session. Returns NULL with OpenSSL's reason on failure; the caller drives the handshake
// (non-blocking) and frees the SSL with SSL_free.
static inline SSL *sonde_starttls_new(int fd, const char *host, int host_is_address, int verify,
                                      const char *ca_file, const char *ca_path, const char *cert,
                                      const char *key, sonde_tls_chain *record, char *reason, size_t size) {
    ERR_clear_error();
    reason[0] = 0;
    memset(record, 0, sizeof *record);
    SSL_CTX *context = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    const char *failed = NULL;
    if (context == NULL) { snprintf(reason, size, "out of memory"); return NULL; }
    SSL_CTX_set_app_data(context, record);
    SSL_CTX_set_default_passwd_cb(context, sonde_tls_no_passphrase);
    SSL_CTX_set_verify(context, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, sonde_tls_verify);
    // One handshake per probe run: a server asking to renegotiate is refused, not re-verified.
    SSL_CTX_set_options(context, SSL_OP_NO_RENEGOTIATION);
    if ((ca_file != NULL || ca_path != NULL) && SSL_CTX_load_verify_locations(context, ca_file, ca_path) != 1) failed = "loading the CA certificates";
    else if (ca_file == NULL && ca_path == NULL && SSL_CTX_set_default_verify_paths(context) != 1) failed = "loading the system CA certificates";
    else if (cert != NULL && SSL_CTX_use_certificate_chain_file(context, cert) != 1) failed = "loading the client certificate";
    else if (key != NULL && SSL_CTX_use_PrivateKey_file(context, key, SSL_FILETYPE_PEM) != 1) failed = "loading the client key";
    else if ((ssl = SSL_new(context)) == NULL) failed = "creating the TLS session";
    else if (SSL_set_fd(ssl, fd) != 1) failed = "attaching the socket";
    else if (!host_is_address && SSL_set_tlsext_host_name(ssl, host) != 1) failed = "setting the server name (SNI)";
    else if (verify && !host_is_address && SSL_set1_host(ssl, host) != 1) failed = "setting the host name to check";
    else if (verify && host_is_address && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1) failed = "setting the address to check";
    SSL_CTX_free(context); // the session holds its own reference
    if (failed != NULL) {
        unsigned long error = ERR_peek_last_error();
        char detail[200] = "";
        if (error != 0) ERR_error_string_n(error, detail, sizeof detail);
        snprintf(reason, size, "%s failed%s%s", failed, detail[0] ? ": " : "", detail);
        if (ssl != NULL) SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

// Why a STARTTLS handshake or TLS read/write failed: the certificate check's verdict when that
// is what failed, else OpenSSL's last error.
static inline void sonde_tls_failure(SSL *ssl, char *reason, size_t size) {
    long verdict = SSL_get_verify_result(ssl);
    unsigned long error = ERR_peek_last_error();
    if (verdict != X509_V_OK && ERR_GET_REASON(error) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        snprintf(reason, size, "certificate verify failed: %s", X509_verify_cert_error_string(verdict));
    } else if (error != 0) {
        ERR_error_string_n(error, reason, size);
    } else {
        snprintf(reason, size, "the connection closed during the TLS exchange");
    }
    ERR_clear_error();
}

#endif
