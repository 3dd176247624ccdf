/* Tests of JSON number conversion (src/parse/json_num.c): text to double
** against glibc strtod in the C locale, bit for bit, and the shortest
** double writer (round trip, shortest, closest).
**   make test T=jsonnum        PGPIPE_NUM_COUNT random inputs per kind (default
**                              300000; each test stops after PGPIPE_NUM_SECONDS,
**                              default 60, of CPU time)
**   make test-numbers          10,000,000 per kind, optimised, no sanitizers,
**                              with the exact fallback counted */

#include <float.h>
#include <math.h>
#include <time.h>

static uint64_t jn_rng = 0x9E3779B97F4A7C15ull;

static uint64_t jn_rand(void)
{
    /* xorshift64*: deterministic, the seed fixed above */
    jn_rng ^= jn_rng >> 12;
    jn_rng ^= jn_rng << 25;
    jn_rng ^= jn_rng >> 27;
    return jn_rng * 0x2545F4914F6CDD1Dull;
}

static long jn_count(void)
{
    const char *s = getenv("PGPIPE_NUM_COUNT");
    long n = s ? atol(s) : 300000;
    return n > 0 ? n : 300000;
}

/* CPU seconds a random test may run (PGPIPE_NUM_SECONDS, default 60) */
static double jn_budget(void)
{
    const char *s = getenv("PGPIPE_NUM_SECONDS");
    double b = s ? atof(s) : 60;
    return b > 0 ? b : 60;
}

static double jn_cpu(void)
{
    return (double)clock() / CLOCKS_PER_SEC;
}

static uint64_t jn_bits(double d)
{
    uint64_t b;
    memcpy(&b, &d, sizeof b);
    return b;
}

static int jn_bits_eq(double a, double b)
{
    return jn_bits(a) == jn_bits(b);
}

static double jn_double(uint64_t b)
{
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

/* json_num_parse with the shape the scanner would pass, checked against the
** general path (shape unknown): the same bits and result. */
static int jn_parse(const char *s, size_t n, double *out)
{
    int shape = JSON_NUM_INT;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == 'e' || s[i] == 'E') {
            shape = JSON_NUM_ANY;
            break;
        }
        if (s[i] == '.')
            shape = JSON_NUM_FRAC;
    }
    double g1 = 1, g2 = 2;
    int r1 = json_num_parse(s, n, shape, &g1);
#ifdef PGPIPE_JSON_NUM_STATS
    unsigned long long fallbacks = json_num_fallbacks; /* count each input once */
#endif
    int r2 = json_num_parse(s, n, JSON_NUM_ANY, &g2);
#ifdef PGPIPE_JSON_NUM_STATS
    json_num_fallbacks = fallbacks;
#endif
    PGT_CHECK_MSG(r1 == r2 && jn_bits_eq(g1, g2), "%.*s: shape %d gives %.17g (%d), the general path %.17g (%d)",
                  (int)(n > 200 ? 200 : n), s, shape, g1, r1, g2, r2);
    *out = g1;
    return r1;
}

/* Parse s with json_num_parse and with strtod: the same bits, and
** PGPIPE_LIMIT exactly when strtod overflowed. */
static void jn_check_parse(const char *s)
{
    size_t n = strlen(s);
    PGT_CHECK_MSG(pgpipe_json_validate(s, n, NULL) == PGPIPE_OK, "not JSON: %.100s", s);
    double got = 12345, want;
    int rc = jn_parse(s, n, &got);
    errno = 0;
    want = strtod(s, NULL);
    int over = errno == ERANGE && isinf(want);
    PGT_CHECK_MSG(jn_bits(got) == jn_bits(want), "%.200s%s: got %.17g (%016llx), strtod %.17g (%016llx)",
                  s, n > 200 ? "..." : "", got, (unsigned long long)jn_bits(got), want,
                  (unsigned long long)jn_bits(want));
    PGT_CHECK_MSG(rc == (over ? PGPIPE_LIMIT : PGPIPE_OK), "%.200s: rc %d", s, rc);
}

/* Exact decimal text of m * 2^e (m > 0, m < 2^62), in plain notation:
** m * 2^e for e >= 0, m * 5^-e / 10^-e for e < 0, in base 10^9 limbs. */
static char *jn_exact(uint64_t m, int e)
{
    enum { CAP = 140 };
    uint32_t limb[CAP]; /* little-endian, base 10^9 */
    int nl = 0;
    for (uint64_t x = m; x; x /= 1000000000u)
        limb[nl++] = (uint32_t)(x % 1000000000u);
    int k = e >= 0 ? e : -e;
    while (k > 0) {
        int step = e >= 0 ? (k < 29 ? k : 29) : (k < 13 ? k : 13);
        uint64_t f = 1;
        for (int i = 0; i < step; i++)
            f *= e >= 0 ? 2 : 5;
        uint64_t carry = 0;
        for (int i = 0; i < nl; i++) {
            uint64_t v = (uint64_t)limb[i] * f + carry;
            limb[i] = (uint32_t)(v % 1000000000u);
            carry = v / 1000000000u;
        }
        while (carry) {
            PGT_CHECK(nl < CAP);
            limb[nl++] = (uint32_t)(carry % 1000000000u);
            carry /= 1000000000u;
        }
        k -= step;
    }
    char digits[CAP * 9 + 1];
    int nd = sprintf(digits, "%u", limb[nl - 1]);
    for (int i = nl - 2; i >= 0; i--)
        nd += sprintf(digits + nd, "%09u", limb[i]);
    int point = e < 0 ? -e : 0; /* digits after the decimal point */
    char *s = malloc((size_t)nd + (size_t)point + 4), *o = s;
    PGT_CHECK(s != NULL);
    if (nd <= point) {
        *o++ = '0';
        *o++ = '.';
        for (int i = point; i > nd; i--)
            *o++ = '0';
        memcpy(o, digits, (size_t)nd);
        o += nd;
    } else {
        memcpy(o, digits, (size_t)(nd - point));
        o += nd - point;
        if (point) {
            *o++ = '.';
            memcpy(o, digits + nd - point, (size_t)point);
            o += point;
        }
    }
    *o = '\0';
    return s;
}

/* A halfway point between two doubles, exactly, and just above and below it. */
static void jn_check_halfway(double d)
{
    int e;
    double fr = frexp(d, &e); /* d = fr * 2^e, fr in [0.5, 1) */
    int be = e - 53;
    if (be < -1074)
        be = -1074;
    uint64_t m = (uint64_t)ldexp(fr, e - be);
    char *s = jn_exact(2 * m + 1, be - 1);
    jn_check_parse(s);
    size_t n = strlen(s);
    char *up = malloc(n + 3);
    PGT_CHECK(up != NULL);
    memcpy(up, s, n);
    strcpy(up + n, strchr(s, '.') ? "1" : ".1");
    jn_check_parse(up);
    /* below: the last digit 5 becomes 4 and 9s follow */
    memcpy(up, s, n + 1);
    if (up[n - 1] == '5') {
        up[n - 1] = '4';
        if (strchr(s, '.'))
            memcpy(up + n, "9", 2);
        jn_check_parse(up);
    }
    free(up);
    free(s);
}

PGT_TEST(json, jsonnum_parse_hard_cases)
{
    const char *cases[] = {
        "0", "-0", "0.0", "-0.0", "0e5", "-0e-5", "0.000e999999999999999999", "1", "-1",
        "0.1", "0.2", "0.3", "1e23", "-1e23", "8.98846567431158e307", "9007199254740993",
        "9007199254740992", "9007199254740994", "9007199254740995", "9007199254740993e10",
        "90071992547409930e-1", "18014398509481985", "1.00000000000000011102230246251565404236316680908203125",
        "1.00000000000000011102230246251565404236316680908203124",
        "1.00000000000000011102230246251565404236316680908203126",
        "2.2250738585072011e-308", "2.2250738585072012e-308", "2.2250738585072014e-308",
        "2.225073858507201136057409796709131975934819546351645648e-308",
        "4.9406564584124654e-324", "5e-324", "4.9e-324", "2.4703282292062327e-324",
        "2.4703282292062328e-324", "2.470328229206232720882538e-324", "1e-324", "3e-324",
        "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308",
        "-1.7976931348623159e308", "1e308", "1e309", "1e-400", "-1e-400",
        "1e99999999999999999999", "-1e99999999999999999999", "1e-99999999999999999999",
        "123456e-99999999999999999999999", "0.000001e-99999999999999", "1e22", "1e-22",
        "123456789012345678", "1234567890123456789", "12345678901234567890", "99999999999999999999",
        "18446744073709551615", "18446744073709551616", "18446744073709551617",
        "9999999999999999999", "10000000000000000000", "12345678901234567890123e-10",
        "3.141592653589793238462643383279502884197169399375105820974944592307816406286",
        "7.2057594037927933e16", "100000000000000000000000000000000000000e-30",
        "0.00000000000000000000000000000000000000000000000000000000000000000000000000001234",
        "1.5e-323", "2.5e-323", "1.2e-322", "4.4501477170144023e-308", "1e-307",
        "4503599627370496.5", "4503599627370497.5", "2251799813685248.25", "1e15", "1e16",
        "1e17", "1e21", "5e-1", "625e-4", "1.797693134862315708145274237317043567981e308",
        "1.797693134862315807937289714053034150799e308", "0.9999999999999999444888487687421729788184165954589843750",
        "0.99999999999999994448884876874217297881841659545898437501", "2e-323", "1e-323",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        jn_check_parse(cases[i]);

    /* 800-digit mantissas: exactly representable, halfway, and past it */
    char *big = malloc(2000);
    PGT_CHECK(big != NULL);
    memset(big, '0', 1999);
    big[0] = '1';
    big[1] = '.';
    big[1999] = '\0';
    big[802] = '\0';
    jn_check_parse(big);         /* 1.000...0 */
    big[801] = '1';
    jn_check_parse(big);         /* 1.000...01 */
    memcpy(big + 802, "e-300", 6);
    jn_check_parse(big);
    memcpy(big + 802, "e300", 5);
    jn_check_parse(big);
    memset(big, '9', 801);
    big[1] = '.';
    big[801] = '\0';
    jn_check_parse(big);         /* 9.999...9 */
    strcat(big, "e308");
    jn_check_parse(big);         /* rounds to infinity */
    /* "0.000...1e400": 399 and 400 zeros after the point */
    for (int z = 398; z <= 401; z++) {
        char *o = big;
        *o++ = '0';
        *o++ = '.';
        memset(o, '0', (size_t)z);
        o += z;
        memcpy(o, "1e400", 6);
        jn_check_parse(big);
        memcpy(o, "17976931348623157e724", 22);
        jn_check_parse(big);
    }
    /* 800 digits that are the first digits of a halfway point, then more */
    free(big);

    /* exact halfway points: every power of two, around DBL_MAX and the
    ** smallest normal, subnormals, 2^53 + small */
    for (int e = -1074; e <= 1023; e++)
        jn_check_halfway(ldexp(1.0, e));
    jn_check_halfway(DBL_MAX);
    jn_check_halfway(nextafter(DBL_MAX, 0));
    jn_check_halfway(DBL_MIN);
    jn_check_halfway(nextafter(DBL_MIN, 0));
    jn_check_halfway(nextafter(DBL_MIN, 1));
    for (uint64_t c = 1; c < 3000; c++)
        jn_check_halfway(jn_double(c));
    for (uint64_t c = 0; c < 3000; c++)
        jn_check_halfway(9007199254740992.0 + 2.0 * (double)c);
    for (int i = 0; i < (jn_count() >= 1000000 ? 100000 : 3000); i++) {
        uint64_t b = jn_rand() & 0x7FFFFFFFFFFFFFFFull;
        if ((b >> 52) >= 0x7FE || (b >> 52) < 2)
            continue;
        jn_check_halfway(jn_double(b));
    }
}

/* Random decimal text: 1..25 digits, a point anywhere, an exponent that
** covers the subnormals to beyond DBL_MAX. */
static void jn_random_decimal(char *s)
{
    char *o = s;
    uint64_t r = jn_rand();
    if (r & 1)
        *o++ = '-';
    int nd = 1 + (int)((r >> 1) % 25);
    int point = (int)((r >> 8) % (unsigned)(nd + 1)); /* digits before the point */
    char dg[32];
    for (int i = 0; i < nd; i++)
        dg[i] = (char)('0' + jn_rand() % 10);
    if (point == 0) {
        *o++ = '0';
        *o++ = '.';
        memcpy(o, dg, (size_t)nd);
        o += nd;
    } else {
        if (point > 1 && dg[0] == '0')
            dg[0] = (char)('1' + jn_rand() % 9);
        memcpy(o, dg, (size_t)point);
        o += point;
        if (point < nd) {
            *o++ = '.';
            memcpy(o, dg + point, (size_t)(nd - point));
            o += nd - point;
        }
    }
    int x = (int)((r >> 16) % 700) - 350;
    if ((r >> 32) % 8 == 0)
        x = (int)((r >> 40) % 60) - 30; /* many around 1, for the fast path */
    if ((r >> 36) % 4)
        o += sprintf(o, "%c%d", (r >> 38) & 1 ? 'e' : 'E', x);
    *o = '\0';
}

PGT_TEST(json, jsonnum_parse_random_decimals_vs_strtod)
{
    long n = jn_count();
    double t0 = jn_cpu(), budget = jn_budget();
    char s[64];
    long i;
    for (i = 0; i < n && jn_cpu() - t0 < budget; i++) {
        jn_random_decimal(s);
        jn_check_parse(s);
    }
    fprintf(stderr, "    %ld random decimals parsed as strtod does\n", i);
#ifdef PGPIPE_JSON_NUM_STATS
    fprintf(stderr, "    exact fallback so far: %llu\n", json_num_fallbacks);
#endif
}

PGT_TEST(json, jsonnum_parse_random_bits_vs_strtod)
{
    long n = jn_count();
    double t0 = jn_cpu(), budget = jn_budget();
    char s[64];
    long i;
    for (i = 0; i < n && jn_cpu() - t0 < budget; i++) {
        uint64_t b = jn_rand();
        double d = jn_double(b);
        if (!isfinite(d))
            continue;
        /* %.17g always reads back; fewer digits round somewhere */
        int prec = (i & 3) ? 17 : 1 + (int)(b % 25);
        snprintf(s, sizeof s, "%.*e", prec - 1, d);
        jn_check_parse(s);
        if ((i & 3) == 1) {
            /* plain notation, as in coordinates and prices: 15-17 digits
            ** in [1e-5, 1e16), through the integer and fraction paths */
            char plain[64];
            double m = ldexp((double)(b >> 11), -53) * pow(10, (int)(b % 21) - 4);
            snprintf(plain, sizeof plain, "%.*g", 15 + (int)(b >> 5) % 3, (b >> 9) & 1 ? -m : m);
            jn_check_parse(plain);
        }
        if (prec == 17) {
            double got;
            PGT_OK(jn_parse(s, strlen(s), &got));
            PGT_CHECK_MSG(jn_bits(got) == b, "%s", s);
        }
    }
    fprintf(stderr, "    %ld random doubles' texts parsed as strtod does\n", i);
#ifdef PGPIPE_JSON_NUM_STATS
    fprintf(stderr, "    exact fallback so far: %llu\n", json_num_fallbacks);
#endif
}

/* The significant digits of a decimal text (no leading or trailing zeros)
** and the exponent of its first digit: "0.0120" -> "12", -2. */
static void jn_key(const char *s, char *dg, int *x)
{
    char all[64];
    int na = 0, intd = -1, nd = 0, i0 = -1;
    const char *p = s;
    if (*p == '-')
        p++;
    for (; *p && *p != 'e' && *p != 'E' && na < 63; p++) {
        if (*p == '.')
            intd = na;
        else
            all[na++] = *p;
    }
    if (intd < 0)
        intd = na;
    for (int i = 0; i < na; i++) {
        if (i0 < 0 && all[i] == '0')
            continue;
        if (i0 < 0)
            i0 = i;
        dg[nd++] = all[i];
    }
    while (nd > 0 && dg[nd - 1] == '0')
        nd--;
    dg[nd] = '\0';
    *x = intd - 1 - (i0 < 0 ? 0 : i0) + (*p ? atoi(p + 1) : 0);
}

static double jn_strtod(const char *s)
{
    return strtod(s, NULL);
}

/* The writer's text for d reads back as d, is the shortest that does, and
** the closest to d among the shortest. */
static void jn_check_write(double d)
{
    char buf[PGPIPE_JSON_DOUBLE_BUF + 8];
    memset(buf, 'x', sizeof buf);
    int n = pgpipe_json_write_double(buf, d);
    PGT_CHECK_MSG(n > 0 && n <= 24 && (size_t)n == strlen(buf), "%.17g: length %d", d, n);
    PGT_CHECK_MSG(pgpipe_json_validate(buf, (size_t)n, NULL) == PGPIPE_OK, "%.17g: not JSON: %s",
                  d, buf);
    double back;
    PGT_OK(jn_parse(buf, (size_t)n, &back));
    PGT_CHECK_MSG(jn_bits(back) == jn_bits(d), "%.17g written as %s reads back as %.17g", d, buf,
                  back);
    if (d == 0) {
        PGT_EQ_STR(buf, signbit(d) ? "-0" : "0");
        return;
    }
    char dg[32], dg2[32], t[64];
    int x, x2;
    jn_key(buf, dg, &x);
    int nd = (int)strlen(dg);
    PGT_CHECK_MSG(nd >= 1 && nd <= 17, "%.17g: %s", d, buf);
    if (nd > 1) {
        /* no decimal of nd - 1 digits reads back: the nearest one and its
        ** two neighbours (the rounding interval is narrower than two steps) */
        snprintf(t, sizeof t, "%.*e", nd - 2, fabs(d));
        PGT_CHECK_MSG(jn_strtod(t) != fabs(d), "%.17g: %s is shorter than %s", d, t, buf);
        char *ep = strchr(t, 'e');
        int ex = atoi(ep + 1);
        char mant[32];
        int ml = 0;
        for (const char *p = t; p < ep; p++)
            if (*p != '.')
                mant[ml++] = *p;
        mant[ml] = '\0';
        uint64_t mv = strtoull(mant, NULL, 10);
        for (int dlt = -1; dlt <= 1; dlt += 2) {
            uint64_t v = mv + (uint64_t)(int64_t)dlt;
            if (v == 0)
                continue;
            snprintf(t, sizeof t, "%llue%d", (unsigned long long)v, ex - (ml - 1));
            PGT_CHECK_MSG(jn_strtod(t) != fabs(d), "%.17g: %s is shorter than %s", d, t, buf);
        }
    }
    /* the nearest decimal of nd digits, when it reads back, is the one written */
    snprintf(t, sizeof t, "%.*e", nd - 1, fabs(d));
    if (jn_strtod(t) == fabs(d)) {
        jn_key(t, dg2, &x2);
        PGT_CHECK_MSG(strcmp(dg, dg2) == 0 && x == x2, "%.17g: wrote %s, nearer is %s", d, buf, t);
    }
}

PGT_TEST(json, jsonnum_write_shortest)
{
    char buf[PGPIPE_JSON_DOUBLE_BUF];
    struct { double d; const char *want; } fixed[] = {
        { 0.0, "0" }, { -0.0, "-0" }, { 1.0, "1" }, { -1.0, "-1" }, { 0.1, "0.1" },
        { 0.3, "0.3" }, { 0.1 + 0.2, "0.30000000000000004" }, { 1e23, "1e23" },
        { 1e22, "1e22" }, { 1e16, "10000000000000000" }, { 1e17, "1e17" },
        { 123456789.0, "123456789" }, { 9007199254740992.0, "9007199254740992" },
        { 9007199254740994.0, "9007199254740994" }, { 0.0001, "0.0001" },
        { 0.00012, "0.00012" }, { 1e-5, "1e-5" }, { 1.5e-7, "1.5e-7" }, { -2.5, "-2.5" },
        { 5e-324, "5e-324" }, { 1e-323, "1e-323" }, { DBL_MAX, "1.7976931348623157e308" },
        { DBL_MIN, "2.2250738585072014e-308" }, { 100.0, "100" }, { 123.456, "123.456" },
        { 1.0 / 3, "0.3333333333333333" }, { 2.0 / 3, "0.6666666666666666" },
        { 5e-5, "5e-5" }, { 33554432.0, "33554432" }, { 1e21, "1e21" }, { 1.5e300, "1.5e300" },
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        int n = pgpipe_json_write_double(buf, fixed[i].d);
        PGT_EQ_STR(buf, fixed[i].want);
        PGT_EQ_INT(n, strlen(fixed[i].want));
        jn_check_write(fixed[i].d);
    }
    /* JSON has no infinity or NaN */
    memset(buf, 'x', sizeof buf);
    PGT_EQ_INT(pgpipe_json_write_double(buf, HUGE_VAL), 0);
    PGT_EQ_STR(buf, "");
    PGT_EQ_INT(pgpipe_json_write_double(buf, -HUGE_VAL), 0);
    PGT_EQ_INT(pgpipe_json_write_double(buf, NAN), 0);
    PGT_EQ_INT(pgpipe_json_write_double(buf, -NAN), 0);
    PGT_EQ_INT(pgpipe_json_write_double(NULL, 1.0), 0);

    /* every power of two and its neighbours (the asymmetric intervals),
    ** the smallest subnormals, integers, decimal fractions */
    for (int e = -1074; e <= 1023; e++) {
        double p = ldexp(1.0, e);
        jn_check_write(p);
        jn_check_write(-p);
        jn_check_write(nextafter(p, 0));
        jn_check_write(nextafter(p, HUGE_VAL));
    }
    for (uint64_t c = 1; c < 20000; c++)
        jn_check_write(jn_double(c));
    for (uint64_t c = 0; c < 2000; c++)
        jn_check_write(jn_double(0x000FFFFFFFFFFFFFull - c));
    for (int i = 0; i < 20000; i++) {
        jn_check_write((double)i);
        jn_check_write((double)i / 1000);
        jn_check_write(9007199254740992.0 - i);
        jn_check_write((double)i * 1e15);
    }
    for (int e = -325; e <= 309; e++) {
        char t[32];
        snprintf(t, sizeof t, "1e%d", e);
        double d = strtod(t, NULL);
        if (isfinite(d) && d > 0)
            jn_check_write(d);
    }
}

PGT_TEST(json, jsonnum_write_random_roundtrip_shortest)
{
    long n = jn_count();
    double t0 = jn_cpu(), budget = jn_budget();
    long i;
    for (i = 0; i < n && jn_cpu() - t0 < budget; i++) {
        double d = jn_double(jn_rand());
        if (isfinite(d))
            jn_check_write(d);
    }
    fprintf(stderr, "    %ld random doubles written shortest and read back\n", i);
}

PGT_TEST(json, jsonnum_accessor_and_documents)
{
    /* pgpipe_json_get_double on documents goes through the same code */
    pgpipe_json_doc *d = NULL;
    PGT_OK(pgpipe_json_doc_open(&d));
    const char *doc = "[0.1, -0, 1e400, -1e400, 1e-400, 9007199254740993, "
                      "1.00000000000000011102230246251565404236316680908203125, 5e-324]";
    PGT_OK(pgpipe_json_parse(d, doc, strlen(doc)));
    const pgpipe_json_val *r = pgpipe_json_root(d);
    double x;
    PGT_OK(pgpipe_json_get_double(pgpipe_json_arr_get(r, 0), &x));
    PGT_EQ_DBL(x, 0.1);
    PGT_OK(pgpipe_json_get_double(pgpipe_json_arr_get(r, 1), &x));
    PGT_CHECK(x == 0 && signbit(x));
    PGT_EQ_INT(pgpipe_json_get_double(pgpipe_json_arr_get(r, 2), &x), PGPIPE_LIMIT);
    PGT_CHECK(x == HUGE_VAL);
    PGT_EQ_INT(pgpipe_json_get_double(pgpipe_json_arr_get(r, 3), &x), PGPIPE_LIMIT);
    PGT_CHECK(x == -HUGE_VAL);
    PGT_OK(pgpipe_json_get_double(pgpipe_json_arr_get(r, 4), &x));
    PGT_CHECK(x == 0 && !signbit(x));
    PGT_OK(pgpipe_json_get_double(pgpipe_json_arr_get(r, 5), &x));
    PGT_EQ_DBL(x, 9007199254740992.0);
    PGT_OK(pgpipe_json_get_double(pgpipe_json_arr_get(r, 6), &x));
    PGT_EQ_DBL(x, 1.0);
    PGT_OK(pgpipe_json_get_double(pgpipe_json_arr_get(r, 7), &x));
    PGT_EQ_DBL(x, 5e-324);
    PGT_EQ_INT(pgpipe_json_get_double(NULL, &x), PGPIPE_MISUSE);
    PGT_EQ_INT(pgpipe_json_get_double(r, &x), PGPIPE_MISUSE);
    PGT_OK(pgpipe_json_get_double(pgpipe_json_arr_get(r, 0), NULL));
    /* every double written by the writer is a valid document that reads back */
    for (int i = 0; i < 10000; i++) {
        double v = jn_double(jn_rand());
        char buf[PGPIPE_JSON_DOUBLE_BUF];
        int n = pgpipe_json_write_double(buf, v);
        if (!isfinite(v)) {
            PGT_EQ_INT(n, 0);
            continue;
        }
        PGT_OK(pgpipe_json_parse(d, buf, (size_t)n));
        PGT_OK(pgpipe_json_get_double(pgpipe_json_root(d), &x));
        PGT_CHECK(jn_bits(x) == jn_bits(v));
    }
    pgpipe_json_doc_close(d);
}
