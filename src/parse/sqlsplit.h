/* ==== SQL splitter: statements of a SQL script ==== */

/* Cuts a buffer of SQL into statements, for the migration runner and the
** shell's scripts. Handle: pgpipe_sql_split.
**
** Thread safety: a splitter is used by one thread at a time; it only reads
** the buffer, which may be shared.
**
** It splits a buffer of SQL the way psql does: statements end at a ';' outside
** quotes, comments, parentheses and SQL-standard function bodies. It knows
** 'strings' (standard_conforming_strings on: '' is a quote, backslash is a
** plain character), E'strings' with backslash escapes, "identifiers",
** $$dollar$$ and $tag$dollar$tag$ quotes, -- comments, nested comments,
** CREATE FUNCTION/PROCEDURE ... BEGIN ATOMIC ... END bodies, and inline data
** after COPY ... FROM stdin; ended by a line holding only \. (or the end of
** the input). Other psql backslash commands are a parse error. */

typedef struct pgpipe_sql_stmt {
    const char *sql;         /* the statement without its ';' (not NUL-terminated) */
    size_t len;
    size_t offset;           /* byte offset of its first character */
    long long line;          /* 1-based line and column where it starts */
    long long column;
    int index;               /* 0-based position among the statements */
    const char *copy_data;   /* COPY ... FROM stdin: the data lines (ending with
                                '\n' unless the input ended), else NULL */
    size_t copy_len;
    long long copy_line;     /* line where the data starts */
    int terminated;          /* 1 when ended by ';' (and COPY data by \.), 0 when
                                the input ended first */
} pgpipe_sql_stmt;

/* Open a splitter over buf[0..len) (kept by reference: keep it alive).
** source names the input in errors ("V0001__x.sql", "<stdin>"; NULL for
** "<buffer>"). */
int pgpipe_sql_split_open(pgpipe_sql_split **out, const char *buf, size_t len,
                          const char *source);
/* Next statement: PGPIPE_ROW (stmt filled), PGPIPE_DONE, or PGPIPE_PARSE
** (unterminated quote or comment, psql meta-command; the error names the
** source, line and column). */
int pgpipe_sql_split_next(pgpipe_sql_split *s, pgpipe_sql_stmt *stmt);
/* 1 when the input ended inside a statement: an unterminated quote, comment
** or dollar quote (PGPIPE_PARSE), a last statement without ';', or COPY data
** without its \. line. An interactive caller reads more input and splits
** again. */
int pgpipe_sql_split_incomplete(const pgpipe_sql_split *s);
void pgpipe_sql_split_close(pgpipe_sql_split *s);
