// simdjson peer for the JSON benchmark: DOM parser, one parser object reused
// across runs (its documented best practice), input loaded into a
// padded_string once. Prints "result WORKLOAD simdjson parse median min max".
//   bench_simdjson FILE WORKLOAD [ndjson]
//   bench_simdjson FILE WORKLOAD --once parse|read-all|none   (one run, for callgrind)
//   bench_simdjson --impl    the kernel simdjson picks here (icelake = AVX-512,
//                            haswell = AVX2, westmere = SSE4.2, fallback)
// simdjson picks its kernel at run time from the CPU, and valgrind has no
// AVX-512: under callgrind it runs haswell where the clock runs icelake. With
// SIMDJSON_FORCE_IMPLEMENTATION=NAME (simdjson's own variable) the contender
// is named simdjson-NAME.
// read-all visits every value: numbers with get_double, strings, keys.
#include <simdjson.h>
#include <algorithm>
#include <time.h>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <cstring>
#include <vector>
#include <string_view>

// CPU time of this thread, as for the C contenders (the machine is shared)
static double now_s()
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

// read-all: visit every value, numbers as double, strings' bytes, keys
static void visit(simdjson::dom::element e, long &sum, double &dsum)
{
    switch (e.type()) {
    case simdjson::dom::element_type::ARRAY:
        for (simdjson::dom::element c : simdjson::dom::array(e))
            visit(c, sum, dsum);
        break;
    case simdjson::dom::element_type::OBJECT:
        for (simdjson::dom::key_value_pair kv : simdjson::dom::object(e)) {
            sum += (long)kv.key.size();
            visit(kv.value, sum, dsum);
        }
        break;
    case simdjson::dom::element_type::INT64:
    case simdjson::dom::element_type::UINT64:
    case simdjson::dom::element_type::DOUBLE: {
        double d = 0;
        if (e.get_double().get(d) == simdjson::SUCCESS)
            dsum += d;
        break;
    }
    case simdjson::dom::element_type::STRING: {
        std::string_view v = std::string_view(e);
        sum += (long)v.size() + (v.size() ? v[0] : 0);
        break;
    }
    case simdjson::dom::element_type::BOOL: sum += bool(e); break;
    default: sum++; break;
    }
}

int main(int argc, char **argv)
{
    if (argc == 2 && std::strcmp(argv[1], "--impl") == 0) {
        std::printf("%s\n", std::string(simdjson::get_active_implementation()->name()).c_str());
        return 0;
    }
    std::string name = "simdjson";
    if (std::getenv("SIMDJSON_FORCE_IMPLEMENTATION"))
        name += "-" + std::string(simdjson::get_active_implementation()->name());
    if (argc < 3) {
        std::fprintf(stderr, "usage: bench_simdjson FILE WORKLOAD [ndjson]\n");
        return 2;
    }
    bool ndjson = argc > 3 && std::strcmp(argv[3], "ndjson") == 0;
    simdjson::padded_string json;
    if (simdjson::padded_string::load(argv[1]).get(json)) {
        std::fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    simdjson::dom::parser parser;
    auto once = [&]() -> long {
        if (ndjson) {
            long n = 0;
            simdjson::dom::document_stream docs;
            if (parser.parse_many(json).get(docs)) {
                std::fprintf(stderr, "simdjson parse_many failed\n");
                std::exit(1);
            }
            for (auto doc : docs) {
                simdjson::dom::element e;
                if (doc.get(e)) {
                    std::fprintf(stderr, "simdjson: bad record\n");
                    std::exit(1);
                }
                n++;
            }
            return n;
        }
        simdjson::dom::element e;
        if (parser.parse(json).get(e)) {
            std::fprintf(stderr, "simdjson parse failed\n");
            std::exit(1);
        }
        return e.is_object() ? 1 : 0;
    };
    auto read_all = [&]() -> long {
        simdjson::dom::element e;
        if (parser.parse(json).get(e)) {
            std::fprintf(stderr, "simdjson parse failed\n");
            std::exit(1);
        }
        long sum = 0;
        double dsum = 0;
        visit(e, sum, dsum);
        return sum + (long)dsum;
    };
    if (argc > 4 && std::strcmp(argv[3], "--once") == 0) { // for callgrind: parse, read-all, none
        std::string_view k = argv[4];
        std::printf("%ld\n", k == "read-all" ? read_all() : k == "parse" ? once() : 0L);
        return 0;
    }
    const int runs = 7;
    // parse and (not for NDJSON) read-all, taking turns run by run
    std::vector<double> r, ra;
    long sink = once() + (ndjson ? 0 : read_all());
    for (int i = 0; i < runs; i++) {
        for (int which = 0; which < (ndjson ? 1 : 2); which++) {
            double t0 = now_s(), t;
            long reps = 0;
            do {
                sink += which ? read_all() : once();
                reps++;
                t = now_s() - t0;
            } while (t < 0.06);
            (which ? ra : r).push_back((double)json.size() * (double)reps / t / 1e6);
        }
    }
    std::sort(r.begin(), r.end());
    std::printf("result %s %s parse %.1f %.1f %.1f\n", argv[2], name.c_str(), r[runs / 2], r[0], r[runs - 1]);
    std::fprintf(stderr, "  %s %s parse: median %.1f MB/s (checksum %ld)\n", argv[2], name.c_str(), r[runs / 2], sink);
    if (!ndjson) {
        std::sort(ra.begin(), ra.end());
        std::printf("result %s %s read-all %.1f %.1f %.1f\n", argv[2], name.c_str(), ra[runs / 2], ra[0], ra[runs - 1]);
    }
    return 0;
}
