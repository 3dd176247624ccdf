CREATE FUNCTION f() RETURNS int AS $fn$ BEGIN RETURN 1; END $fn$ LANGUAGE plpgsql;
SELECT E'a\'b', "x;y"; /* a /* b */ */
