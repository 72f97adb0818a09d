/* CUnit suite for server/core/log: level parsing and filtering, the logfmt line format and the
 * JSON one, checked by capturing stderr into a temporary file. */
#include <CUnit/Basic.h>
#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

/* ---- stderr capture ---- */

static int saved_fd = -1;
static FILE *cap;

static void capture_start(void)
{
    fflush(stderr);
    cap = tmpfile();
    CU_ASSERT_PTR_NOT_NULL_FATAL(cap);
    saved_fd = dup(STDERR_FILENO);
    CU_ASSERT_FATAL(saved_fd >= 0);
    CU_ASSERT_FATAL(dup2(fileno(cap), STDERR_FILENO) == STDERR_FILENO);
}

/* Restores stderr and returns what was written (malloc'd). */
static char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_fd, STDERR_FILENO);
    close(saved_fd);
    saved_fd = -1;
    /* az_log writes with write(2), so ask the descriptor, not the FILE, for the size. */
    off_t n = lseek(fileno(cap), 0, SEEK_END);
    if (n < 0) n = 0;
    char *buf = calloc(1, (size_t)n + 1);
    if (buf && n > 0 && pread(fileno(cap), buf, (size_t)n, 0) != (ssize_t)n) buf[0] = '\0';
    fclose(cap);
    cap = NULL;
    return buf;
}

static int line_count(const char *s)
{
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static int matches(const char *re, const char *s)
{
    regex_t rx;
    if (regcomp(&rx, re, REG_EXTENDED | REG_NOSUB) != 0) return -1;
    int ok = regexec(&rx, s, 0, NULL, 0) == 0;
    regfree(&rx);
    return ok;
}

#define TS_RE "^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "

/* ---- level parsing ---- */

static void test_parse_level(void)
{
    static const struct {
        const char *s;
        az_log_level want;
    } ok[] = {
        {"debug", AZ_LOG_DEBUG}, {"DEBUG", AZ_LOG_DEBUG}, {"info", AZ_LOG_INFO},
        {"Info", AZ_LOG_INFO},   {"warn", AZ_LOG_WARN},   {"WARN", AZ_LOG_WARN},
        {"warning", AZ_LOG_WARN}, {"WarNing", AZ_LOG_WARN}, {"error", AZ_LOG_ERROR},
        {"ERROR", AZ_LOG_ERROR},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        /* Start from a level different from the expected one so a no-op would show. */
        az_log_level out = ok[i].want == AZ_LOG_ERROR ? AZ_LOG_DEBUG : AZ_LOG_ERROR;
        CU_ASSERT_EQUAL(az_log_parse_level(ok[i].s, &out), 0);
        CU_ASSERT_EQUAL(out, ok[i].want);
    }
    static const char *bad[] = {"", "verbose", "err", "information", "warnings", " info",
                                "info ", "fatal", "trace", "0", "debugx"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        az_log_level out = (az_log_level)77;
        CU_ASSERT_EQUAL(az_log_parse_level(bad[i], &out), -1);
        CU_ASSERT_EQUAL((int)out, 77);
    }
    az_log_level out = AZ_LOG_WARN;
    CU_ASSERT_EQUAL(az_log_parse_level(NULL, &out), -1);
    CU_ASSERT_EQUAL(out, AZ_LOG_WARN);
}

static void test_enabled(void)
{
    az_log_set_level(AZ_LOG_WARN);
    CU_ASSERT_FALSE(az_log_enabled(AZ_LOG_DEBUG));
    CU_ASSERT_FALSE(az_log_enabled(AZ_LOG_INFO));
    CU_ASSERT_TRUE(az_log_enabled(AZ_LOG_WARN));
    CU_ASSERT_TRUE(az_log_enabled(AZ_LOG_ERROR));
    az_log_set_level(AZ_LOG_DEBUG);
    CU_ASSERT_TRUE(az_log_enabled(AZ_LOG_DEBUG));
    CU_ASSERT_TRUE(az_log_enabled(AZ_LOG_INFO));
    az_log_set_level(AZ_LOG_ERROR);
    CU_ASSERT_FALSE(az_log_enabled(AZ_LOG_WARN));
    CU_ASSERT_TRUE(az_log_enabled(AZ_LOG_ERROR));
    az_log_set_level(AZ_LOG_INFO);
    CU_ASSERT_FALSE(az_log_enabled(AZ_LOG_DEBUG));
    CU_ASSERT_TRUE(az_log_enabled(AZ_LOG_INFO));
}

/* ---- output ---- */

static void test_line_format(void)
{
    az_log_set_level(AZ_LOG_INFO);
    capture_start();
    az_info("cannot connect to redis %s: %d", "127.0.0.1:6379", 111);
    char *out = capture_end();
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(line_count(out), 1);
    CU_ASSERT_EQUAL(matches(TS_RE "level=info msg=\"cannot connect to redis 127\\.0\\.0\\.1:6379: "
                            "111\"\n$",
                            out),
                    1);
    if (!matches(TS_RE, out)) fprintf(stderr, "\n  line was: %s", out);
    free(out);
}

static void test_levels_named(void)
{
    az_log_set_level(AZ_LOG_DEBUG);
    capture_start();
    az_debug("d");
    az_info("i");
    az_warn("w");
    az_error("e");
    char *out = capture_end();
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(line_count(out), 4);
    const char *d = strstr(out, " level=debug msg=\"d\"\n");
    const char *i = strstr(out, " level=info msg=\"i\"\n");
    const char *w = strstr(out, " level=warn msg=\"w\"\n");
    const char *e = strstr(out, " level=error msg=\"e\"\n");
    CU_ASSERT(d && i && w && e && d < i && i < w && w < e);
    free(out);
    az_log_set_level(AZ_LOG_INFO);
}

static void test_escaping(void)
{
    az_log_set_level(AZ_LOG_INFO);
    capture_start();
    az_info("say \"hi\" to C:\\dir\nsecond line");
    char *out = capture_end();
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    /* One physical line: the embedded newline is escaped, so log parsers keep it together. */
    CU_ASSERT_EQUAL(line_count(out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "msg=\"say \\\"hi\\\" to C:\\\\dir\\nsecond line\"\n"));
    if (!strstr(out, "msg=\"say \\\"hi\\\"")) fprintf(stderr, "\n  line was: %s", out);
    free(out);

    /* Other control characters never reach the output raw. */
    capture_start();
    az_info("a\tb\rc\x01" "d\x1b" "e");
    out = capture_end();
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(line_count(out), 1);
    CU_ASSERT_PTR_NULL(strchr(out, '\r'));
    CU_ASSERT_PTR_NULL(strchr(out, '\t'));
    CU_ASSERT_PTR_NULL(strchr(out, '\x01'));
    CU_ASSERT_PTR_NULL(strchr(out, '\x1b'));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "msg=\"a"));
    free(out);
}

static void test_kv(void)
{
    az_log_set_level(AZ_LOG_INFO);
    capture_start();
    az_log_kv(AZ_LOG_WARN, "rpc finished", "method=/agentz.v1.AgentService/GetAgent code=5 ms=12");
    az_log_kv(AZ_LOG_INFO, "no fields", NULL);
    az_log_kv(AZ_LOG_INFO, "empty fields", "");
    char *out = capture_end();
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(line_count(out), 3);
    CU_ASSERT_EQUAL(matches(TS_RE "level=warn msg=\"rpc finished\" "
                            "method=/agentz\\.v1\\.AgentService/GetAgent code=5 ms=12\n",
                            out),
                    1);
    /* No trailing space when there are no fields. */
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "level=info msg=\"no fields\"\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "level=info msg=\"empty fields\"\n"));
    free(out);
}

static void test_below_level_not_written(void)
{
    az_log_set_level(AZ_LOG_WARN);
    capture_start();
    az_debug("hidden debug");
    az_info("hidden info");
    az_log_kv(AZ_LOG_INFO, "hidden kv", "a=1");
    az_warn("shown warn");
    char *out = capture_end();
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(line_count(out), 1);
    CU_ASSERT_PTR_NULL(strstr(out, "hidden"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "msg=\"shown warn\""));
    free(out);

    az_log_set_level(AZ_LOG_ERROR);
    capture_start();
    az_warn("hidden warn");
    out = capture_end();
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_STRING_EQUAL(out, "");
    free(out);
    az_log_set_level(AZ_LOG_INFO);
}

static void test_long_message(void)
{
    /* A message far longer than the line buffer is cut, still one line ending in \n. */
    az_log_set_level(AZ_LOG_INFO);
    char *big = malloc(10000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    memset(big, 'q', 9999);
    big[9999] = '\0';
    capture_start();
    az_info("%s", big);
    char *fields = malloc(10000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fields);
    memset(fields, 'k', 9999);
    fields[9999] = '\0';
    az_log_kv(AZ_LOG_INFO, "m", fields);
    char *out = capture_end();
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(line_count(out), 2);
    CU_ASSERT(strlen(out) <= 2 * 4096);
    CU_ASSERT_EQUAL(out[strlen(out) - 1], '\n');
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "qqqq"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "msg=\"m\" kkkk"));
    free(out);
    free(big);
    free(fields);
}

/* ---- JSON lines ---- */

static void test_parse_format(void)
{
    az_log_format f = AZ_LOG_JSON;
    CU_ASSERT_EQUAL(az_log_parse_format("text", &f), 0);
    CU_ASSERT_EQUAL(f, AZ_LOG_TEXT);
    CU_ASSERT_EQUAL(az_log_parse_format("JSON", &f), 0);
    CU_ASSERT_EQUAL(f, AZ_LOG_JSON);
    CU_ASSERT_EQUAL(az_log_parse_format("logfmt", &f), -1);
    CU_ASSERT_EQUAL(az_log_parse_format(NULL, &f), -1);
    CU_ASSERT_EQUAL(f, AZ_LOG_JSON);
}

/* The one line written by fn as a JSON object (NULL when it is not one line of JSON). */
static json_t *json_line(const char *out)
{
    if (!out || line_count(out) != 1 || out[strlen(out) - 1] != '\n') return NULL;
    json_error_t e;
    json_t *j = json_loads(out, JSON_REJECT_DUPLICATES, &e);
    return json_is_object(j) ? j : (json_decref(j), NULL);
}

static void test_json_line(void)
{
    az_log_set_level(AZ_LOG_DEBUG);
    az_log_set_format(AZ_LOG_JSON);
    capture_start();
    az_warn("cannot open \"%s\"\n\tline two \\ end", "f");
    char *out = capture_end();
    az_log_set_format(AZ_LOG_TEXT);
    json_t *j = json_line(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(json_object_size(j), 3);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "level")), "warn");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "msg")), "cannot open \"f\"\n\tline two \\ end");
    const char *t = json_string_value(json_object_get(j, "time"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(matches("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$", t), 1);
    json_decref(j);
    free(out);
    az_log_set_level(AZ_LOG_INFO);
}

static void test_json_fields(void)
{
    az_log_set_format(AZ_LOG_JSON);
    capture_start();
    az_log_kv(AZ_LOG_INFO, "rpc",
              "method=/agentz.v1.AgentService/GetAgent status=NOT_FOUND duration_ms=1.250 bytes=0 "
              "peer=ipv4:127.0.0.1:5 request_id=12345 workspace=- trace_id=4bf92f3577b34da6a3ce929d0e0e4736 "
              "path=\"/a b\\\"c\\\\d\\ne\" neg=-3e2 notnum=01 word");
    char *out = capture_end();
    az_log_set_format(AZ_LOG_TEXT);
    json_t *j = json_line(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "msg")), "rpc");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "method")), "/agentz.v1.AgentService/GetAgent");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "status")), "NOT_FOUND");
    CU_ASSERT(json_is_real(json_object_get(j, "duration_ms")));
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(j, "duration_ms")), 1.25, 1e-9);
    CU_ASSERT(json_is_integer(json_object_get(j, "bytes")));
    /* Ids stay strings even when they look like numbers. */
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "request_id")), "12345");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "trace_id")), "4bf92f3577b34da6a3ce929d0e0e4736");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "path")), "/a b\"c\\d\ne");
    CU_ASSERT_DOUBLE_EQUAL(json_number_value(json_object_get(j, "neg")), -300, 1e-9);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "notnum")), "01"); /* not JSON's syntax */
    CU_ASSERT_PTR_NULL(json_object_get(j, "word")); /* no '=': skipped */
    json_decref(j);
    free(out);
}

static void test_json_bytes(void)
{
    /* Controls and bytes that are not UTF-8 still make valid JSON; valid UTF-8 passes as is. */
    az_log_set_format(AZ_LOG_JSON);
    capture_start();
    az_info("bad \xff\xc3 ok \xc3\xa9 \x01 \xed\xa0\x80 end");
    char *out = capture_end();
    az_log_set_format(AZ_LOG_TEXT);
    json_t *j = json_line(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "msg")),
                           "bad \xef\xbf\xbd\xef\xbf\xbd ok \xc3\xa9 \x01 \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd end");
    json_decref(j);
    free(out);
}

static void test_json_long(void)
{
    /* Fields past the line's size are cut, and what is written is still one JSON object. */
    size_t n = 20000;
    char *fields = malloc(n + 64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fields);
    size_t off = (size_t)sprintf(fields, "a=1 big=\"");
    memset(fields + off, 'x', n);
    strcpy(fields + off + n, "\" after=2");
    az_log_set_format(AZ_LOG_JSON);
    capture_start();
    az_log_kv(AZ_LOG_INFO, "m", fields);
    char *out = capture_end();
    az_log_set_format(AZ_LOG_TEXT);
    json_t *j = json_line(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "a")), 1);
    CU_ASSERT(json_is_string(json_object_get(j, "big")));
    CU_ASSERT(strlen(out) <= 8192);
    json_decref(j);
    free(out);
    free(fields);
}

static void test_traceparent(void)
{
    char t[33], sp[17];
    const char *ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    CU_ASSERT_EQUAL(az_log_traceparent(ok, strlen(ok), t, sp), 1);
    CU_ASSERT_STRING_EQUAL(t, "4bf92f3577b34da6a3ce929d0e0e4736");
    CU_ASSERT_STRING_EQUAL(sp, "00f067aa0ba902b7");
    const char *unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    CU_ASSERT_EQUAL(az_log_traceparent(unsampled, strlen(unsampled), t, sp), 1);
    static const char *const bad[] = {
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* another version */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero parent id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",   /* flags not hex */
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",   /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* too long */
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",    /* too short */
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        strcpy(t, "x");
        strcpy(sp, "x");
        CU_ASSERT_EQUAL(az_log_traceparent(bad[i], strlen(bad[i]), t, sp), 0);
        CU_ASSERT_STRING_EQUAL(t, "");
        CU_ASSERT_STRING_EQUAL(sp, "");
    }
    CU_ASSERT_EQUAL(az_log_traceparent(NULL, 55, t, sp), 0);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("log_level", NULL, NULL);
    if (!s) return 1;
    CU_add_test(s, "parse level", test_parse_level);
    CU_add_test(s, "enabled follows set_level", test_enabled);
    CU_pSuite o = CU_add_suite("log_output", NULL, NULL);
    if (!o) return 1;
    CU_add_test(o, "line format", test_line_format);
    CU_add_test(o, "levels named", test_levels_named);
    CU_add_test(o, "escaping", test_escaping);
    CU_add_test(o, "az_log_kv fields", test_kv);
    CU_add_test(o, "below level not written", test_below_level_not_written);
    CU_add_test(o, "long message", test_long_message);
    CU_pSuite js = CU_add_suite("log_json", NULL, NULL);
    if (!js) return 1;
    CU_add_test(js, "parse format", test_parse_format);
    CU_add_test(js, "json line", test_json_line);
    CU_add_test(js, "json fields from logfmt", test_json_fields);
    CU_add_test(js, "json escaping of bytes", test_json_bytes);
    CU_add_test(js, "json long fields", test_json_long);
    CU_add_test(js, "traceparent", test_traceparent);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                        CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
