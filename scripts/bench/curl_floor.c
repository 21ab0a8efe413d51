/* The floor under any libcurl-based agent, for the cost benchmark: a C program that does only
 * what a Sonde probe run's transfer does (an easy handle, a fresh connection, GET, read the
 * body) N times at a fixed rate, and prints its CPU per GET and its peak RSS as JSON. With a 4th
 * argument `reuse`, one easy handle is reset and reused for every GET instead of a new one each
 * (scripts/bench/curl_floor_reuse.py compares the two).
 * Built by scripts/bench/agent_bench.py with `cc -O2 curl_floor.c -lcurl`. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static size_t sink(char *data, size_t size, size_t count, void *context) {
    (void)data; (void)context;
    return size * count;
}

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

static long peak_rss_kib(void) {
    char line[256];
    long kib = -1;
    FILE *status = fopen("/proc/self/status", "r");
    while (status && fgets(line, sizeof line, status))
        if (strncmp(line, "VmHWM:", 6) == 0) kib = strtol(line + 6, NULL, 10);
    if (status) fclose(status);
    return kib;
}

static CURL *kept;  /* the reused handle (`reuse`), else NULL */

static int get(const char *url) {
    CURL *handle = kept ? kept : curl_easy_init();
    long status = 0;
    curl_easy_setopt(handle, CURLOPT_URL, url);
    curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(handle, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(handle, CURLOPT_FORBID_REUSE, 1L);
    curl_easy_setopt(handle, CURLOPT_TIMEOUT_MS, 5000L);
    CURLcode code = curl_easy_perform(handle);
    curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &status);
    if (kept) curl_easy_reset(handle); else curl_easy_cleanup(handle);
    return code == CURLE_OK && status == 200;
}

int main(int argc, char **argv) {
    if (argc != 4 && !(argc == 5 && strcmp(argv[4], "reuse") == 0)) {
        fprintf(stderr, "usage: %s URL COUNT RATE_PER_SECOND [reuse]\n", argv[0]);
        return 2;
    }
    const char *url = argv[1];
    int count = atoi(argv[2]);
    double rate = atof(argv[3]);
    curl_global_init(CURL_GLOBAL_ALL);
    if (argc == 5) kept = curl_easy_init();
    for (int i = 0; i < 50; i++)  /* warm-up, as for the others */
        if (!get(url)) { fprintf(stderr, "GET %s failed\n", url); return 1; }
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    double cpu0 = cpu_seconds();
    int failed = 0;
    for (int i = 0; i < count; i++) {
        double due = i / rate;
        struct timespec at = start;
        at.tv_sec += (time_t)due;
        at.tv_nsec += (long)((due - (time_t)due) * 1e9);
        if (at.tv_nsec >= 1000000000L) { at.tv_sec += 1; at.tv_nsec -= 1000000000L; }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL);
        failed += !get(url);
    }
    double cpu = cpu_seconds() - cpu0;
    printf("{\"gets\": %d, \"failed\": %d, \"cpu_per_get_ms\": %.4f, \"hwm_kib\": %ld}\n", count, failed, cpu / count * 1000, peak_rss_kib());
    return failed ? 1 : 0;
}
