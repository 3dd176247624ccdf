-- .workers user: the batch's events as a JSON array in $1 (as .work --sql)
INSERT INTO production.users (email, full_name, country)
SELECT lower(e->'payload'->>'email'), e->'payload'->>'full_name', nullif(e->'payload'->>'country', '')
FROM jsonb_array_elements($1::jsonb) e
ON CONFLICT (email) DO UPDATE SET full_name = EXCLUDED.full_name, country = EXCLUDED.country
