//! Several replicas on one PostgreSQL database (filled in below).
