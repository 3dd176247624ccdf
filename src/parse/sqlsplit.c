/*
** The SQL statement splitter: cuts a buffer of SQL into statements the way
** psql does (quotes, comments, dollar quotes, BEGIN ATOMIC bodies, COPY ...
** FROM stdin data). The migration runner (src/db/migrate.c) and the shell's
** script runner use it; it touches no database.
*/

#include "pp_parse.h"

struct pgpipe_sql_split {
    pp_handle hdr;
    const char *buf;
    size_t len, pos;
    long long line;       /* line of buf[pos] */
    size_t line_start;    /* offset of that line's first byte */
    int index;
    int incomplete;       /* the input ended inside a statement */
    char source[256];
};

int pgpipe_sql_split_open(pgpipe_sql_split **out, const char *buf, size_t len,
                          const char *source)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_sql_split *s = *out = pp_handle_new(sizeof *s);
    if (!s)
        return PGPIPE_NOMEM;
    s->buf = buf ? buf : "";
    s->len = buf ? len : 0;
    s->line = 1;
    snprintf(s->source, sizeof s->source, "%s", source && *source ? source : "<buffer>");
    return PGPIPE_OK;
}

int pgpipe_sql_split_incomplete(const pgpipe_sql_split *s)
{
    return s ? s->incomplete : 0;
}

void pgpipe_sql_split_close(pgpipe_sql_split *s)
{
    pp_free(s);
}

static int sqlsplit_is_ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

PGPIPE_PRIVATE int sqlsplit_is_ident_char(unsigned char c)
{
    return sqlsplit_is_ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

/* Moves one byte forward, keeping the line count. */
static inline void sqlsplit_step(pgpipe_sql_split *s)
{
    if (s->buf[s->pos] == '\n') {
        s->line++;
        s->line_start = s->pos + 1;
    }
    s->pos++;
}

static int sqlsplit_err(pgpipe_sql_split *s, long long line, size_t at, size_t line_start,
                         const char *what)
{
    if (strncmp(what, "unterminated", 12) == 0)
        s->incomplete = 1;
    return pp_err_at(&s->hdr.err, PGPIPE_PARSE, s->source, line,
                     (long long)(at - line_start) + 1, (long long)at, "%s", what);
}

/* Skips a comment at pos ("--" or a nested block comment). Returns 1 when it
** skipped one, 0 when there is none, -1 on an unterminated block comment. */
static int sqlsplit_skip_comment(pgpipe_sql_split *s)
{
    const char *b = s->buf;
    if (s->pos + 1 < s->len && b[s->pos] == '-' && b[s->pos + 1] == '-') {
        while (s->pos < s->len && b[s->pos] != '\n')
            s->pos++;
        return 1;
    }
    if (s->pos + 1 < s->len && b[s->pos] == '/' && b[s->pos + 1] == '*') {
        long long line = s->line;
        size_t at = s->pos, ls = s->line_start;
        int depth = 0;
        while (s->pos < s->len) {
            if (s->pos + 1 < s->len && b[s->pos] == '/' && b[s->pos + 1] == '*') {
                depth++;
                s->pos += 2;
            } else if (s->pos + 1 < s->len && b[s->pos] == '*' && b[s->pos + 1] == '/') {
                s->pos += 2;
                if (--depth == 0)
                    return 1;
            } else {
                sqlsplit_step(s);
            }
        }
        sqlsplit_err(s, line, at, ls, "unterminated /* comment");
        return -1;
    }
    return 0;
}

/* Skips a quoted token starting at pos (', E', " or $tag$). Returns 0 or
** PGPIPE_PARSE. */
static int sqlsplit_skip_quoted(pgpipe_sql_split *s, char q, int backslash)
{
    long long line = s->line;
    size_t at = s->pos, ls = s->line_start;
    const char *b = s->buf;
    s->pos++;
    while (s->pos < s->len) {
        char c = b[s->pos];
        if (backslash && c == '\\' && s->pos + 1 < s->len) {
            s->pos++;
            sqlsplit_step(s);
            continue;
        }
        if (c == q) {
            if (s->pos + 1 < s->len && b[s->pos + 1] == q) {
                s->pos += 2;
                continue;
            }
            s->pos++;
            return PGPIPE_OK;
        }
        sqlsplit_step(s);
    }
    return sqlsplit_err(s, line, at, ls,
                         q == '"' ? "unterminated quoted identifier" : "unterminated quoted string");
}

/* At a '$': length of a dollar-quote delimiter ($$ or $tag$) here, or 0. */
static size_t sqlsplit_dollar_tag(const pgpipe_sql_split *s, size_t p)
{
    const char *b = s->buf;
    size_t q = p + 1;
    if (q < s->len && b[q] == '$')
        return 2;
    if (q >= s->len || !sqlsplit_is_ident_start((unsigned char)b[q]))
        return 0;
    while (q < s->len && sqlsplit_is_ident_char((unsigned char)b[q]) && b[q] != '$')
        q++;
    return q < s->len && b[q] == '$' ? q + 1 - p : 0;
}

static int sqlsplit_skip_dollar(pgpipe_sql_split *s, size_t taglen)
{
    long long line = s->line;
    size_t at = s->pos, ls = s->line_start;
    const char *tag = s->buf + s->pos;
    s->pos += taglen;
    while (s->pos < s->len) {
        if (s->buf[s->pos] == '$' && s->len - s->pos >= taglen &&
            memcmp(s->buf + s->pos, tag, taglen) == 0) {
            s->pos += taglen;
            return PGPIPE_OK;
        }
        sqlsplit_step(s);
    }
    return sqlsplit_err(s, line, at, ls, "unterminated dollar-quoted string");
}

PGPIPE_PRIVATE int sqlsplit_word_is(const char *w, size_t n, const char *kw)
{
    return strlen(kw) == n && strncasecmp(w, kw, n) == 0;
}

int pgpipe_sql_split_next(pgpipe_sql_split *s, pgpipe_sql_stmt *st)
{
    if (!s || !st)
        return PGPIPE_MISUSE;
    if (s->hdr.err.code == PGPIPE_PARSE)
        return PGPIPE_PARSE;
    const char *b = s->buf;
    memset(st, 0, sizeof *st);

    /* skip blanks, comments and empty statements */
    for (;;) {
        while (s->pos < s->len && (isspace((unsigned char)b[s->pos]) || b[s->pos] == ';'))
            sqlsplit_step(s);
        if (s->pos >= s->len)
            return PGPIPE_DONE;
        int c = sqlsplit_skip_comment(s);
        if (c < 0)
            return PGPIPE_PARSE;
        if (c == 0)
            break;
    }

    size_t start = s->pos, end = s->len;
    st->offset = start;
    st->line = s->line;
    st->column = (long long)(start - s->line_start) + 1;

    int paren = 0, begin_depth = 0, nwords = 0, copy_stmt = 0, copy_in = 0;
    char kw[4] = { 0, 0, 0, 0 };
    int prev_from = 0, semicolon = 0;
    while (s->pos < s->len) {
        unsigned char c = (unsigned char)b[s->pos];
        if (c == ';' && paren == 0 && begin_depth == 0) {
            end = s->pos;
            s->pos++;
            semicolon = 1;
            break;
        }
        if ((c == '-' || c == '/') && s->pos + 1 < s->len) {
            int k = sqlsplit_skip_comment(s);
            if (k < 0)
                return PGPIPE_PARSE;
            if (k > 0)
                continue;
        }
        if (c == '\'' || c == '"') {
            if (sqlsplit_skip_quoted(s, (char)c, 0) != PGPIPE_OK)
                return PGPIPE_PARSE;
            prev_from = 0;
            continue;
        }
        if (c == '$') {
            size_t tl = sqlsplit_dollar_tag(s, s->pos);
            if (tl) {
                if (sqlsplit_skip_dollar(s, tl) != PGPIPE_OK)
                    return PGPIPE_PARSE;
                prev_from = 0;
            } else {
                s->pos++;
            }
            continue;
        }
        if (c == '\\') {
            sqlsplit_err(s, s->line, s->pos, s->line_start,
                          "psql backslash commands are not supported (only the \\. line "
                          "that ends COPY ... FROM stdin data)");
            return PGPIPE_PARSE;
        }
        if (c == '(') {
            paren++;
            s->pos++;
            continue;
        }
        if (c == ')') {
            if (paren > 0)
                paren--;
            s->pos++;
            continue;
        }
        if (sqlsplit_is_ident_char(c)) {
            size_t w0 = s->pos;
            while (s->pos < s->len && sqlsplit_is_ident_char((unsigned char)b[s->pos]))
                s->pos++;
            const char *w = b + w0;
            size_t wn = s->pos - w0;
            if (wn == 1 && (w[0] == 'e' || w[0] == 'E') && s->pos < s->len && b[s->pos] == '\'') {
                if (sqlsplit_skip_quoted(s, '\'', 1) != PGPIPE_OK)
                    return PGPIPE_PARSE;
                prev_from = 0;
                continue;
            }
            if (!sqlsplit_is_ident_start(c)) /* a number */
                continue;
            /* CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC ... END */
            if (nwords < 4) {
                char k = 0;
                if (sqlsplit_word_is(w, wn, "create")) k = 'c';
                else if (sqlsplit_word_is(w, wn, "or")) k = 'o';
                else if (sqlsplit_word_is(w, wn, "replace")) k = 'r';
                else if (sqlsplit_word_is(w, wn, "function")) k = 'f';
                else if (sqlsplit_word_is(w, wn, "procedure")) k = 'p';
                kw[nwords] = k;
            }
            if (nwords == 0 && sqlsplit_word_is(w, wn, "copy"))
                copy_stmt = 1;
            nwords++;
            int routine = kw[0] == 'c' &&
                          (kw[1] == 'f' || kw[1] == 'p' ||
                           (kw[1] == 'o' && kw[2] == 'r' && (kw[3] == 'f' || kw[3] == 'p')));
            if (routine && paren == 0) {
                if (sqlsplit_word_is(w, wn, "begin"))
                    begin_depth++;
                else if (sqlsplit_word_is(w, wn, "case") && begin_depth > 0)
                    begin_depth++;
                else if (sqlsplit_word_is(w, wn, "end") && begin_depth > 0)
                    begin_depth--;
            }
            if (copy_stmt && paren == 0 && prev_from && sqlsplit_word_is(w, wn, "stdin"))
                copy_in = 1;
            prev_from = copy_stmt && paren == 0 && sqlsplit_word_is(w, wn, "from");
            continue;
        }
        sqlsplit_step(s);
    }
    while (end > start && isspace((unsigned char)b[end - 1]))
        end--;
    st->sql = b + start;
    st->len = end - start;
    st->index = s->index++;
    st->terminated = semicolon;
    if (!semicolon)
        s->incomplete = 1;

    if (copy_in && semicolon) {
        /* the rest of the line must be blank (or a comment); data follows */
        while (s->pos < s->len && b[s->pos] != '\n') {
            if (b[s->pos] == '-' && s->pos + 1 < s->len && b[s->pos + 1] == '-') {
                while (s->pos < s->len && b[s->pos] != '\n')
                    s->pos++;
                break;
            }
            if (!isspace((unsigned char)b[s->pos])) {
                sqlsplit_err(s, s->line, s->pos, s->line_start,
                              "text after COPY ... FROM stdin; on the same line (the data "
                              "must start on the next line)");
                return PGPIPE_PARSE;
            }
            s->pos++;
        }
        if (s->pos < s->len)
            sqlsplit_step(s); /* the newline */
        size_t d0 = s->pos;
        st->copy_line = s->line;
        st->copy_data = b + d0;
        st->copy_len = s->len - d0;
        st->terminated = 0;
        while (s->pos < s->len) {
            size_t ls = s->pos, le = ls;
            while (le < s->len && b[le] != '\n')
                le++;
            size_t ce = le;
            if (ce > ls && b[ce - 1] == '\r')
                ce--;
            if (ce - ls == 2 && b[ls] == '\\' && b[ls + 1] == '.') {
                st->copy_len = ls - d0;
                st->terminated = 1;
                s->pos = le;
                if (s->pos < s->len)
                    sqlsplit_step(s);
                break;
            }
            s->pos = le;
            if (s->pos < s->len)
                sqlsplit_step(s);
        }
        if (!st->terminated)
            s->incomplete = 1;
    }
    return PGPIPE_ROW;
}
