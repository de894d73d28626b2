-- Which Herald process made each attempt (`[server] replica_name`).
ALTER TABLE attempts ADD COLUMN replica TEXT;
