-- A date dimension, filled for 2020 through 2035.

CREATE TABLE IF NOT EXISTS production.dim_date (
    date_key     INTEGER PRIMARY KEY,           -- YYYYMMDD
    full_date    DATE     NOT NULL UNIQUE,
    year         SMALLINT NOT NULL,
    quarter      SMALLINT NOT NULL,
    month        SMALLINT NOT NULL,
    month_name   TEXT     NOT NULL,
    day_of_month SMALLINT NOT NULL,
    day_of_week  SMALLINT NOT NULL,             -- ISO: 1 = Monday .. 7 = Sunday
    day_name     TEXT     NOT NULL,
    week_of_year SMALLINT NOT NULL,             -- ISO week
    is_weekend   BOOLEAN  NOT NULL
);

INSERT INTO production.dim_date
SELECT to_char(d, 'YYYYMMDD')::integer,
       d,
       extract(year FROM d),
       extract(quarter FROM d),
       extract(month FROM d),
       trim(to_char(d, 'Month')),
       extract(day FROM d),
       extract(isodow FROM d),
       trim(to_char(d, 'Day')),
       extract(week FROM d),
       extract(isodow FROM d) IN (6, 7)
FROM generate_series(DATE '2020-01-01', DATE '2035-12-31', INTERVAL '1 day') AS g(t),
     LATERAL (SELECT t::date AS d) AS x
ON CONFLICT (date_key) DO NOTHING;
