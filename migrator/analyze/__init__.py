"""`migrator analyze`: watch the live traffic on the source, read-only (DESIGN section 8).

- `sampling`: the sampler (backends active or idle in a transaction, their waits and the
  relations each transaction holds locks on) and the server's own counters over the window;
- `routing`: which PgBouncer entry each backend came through, or `direct`;
- `statements`: pg_stat_statements over the window, each statement parsed (pglast) into
  the tables it touches;
- `impact`: average active sessions (AAS) per table and group, by wait class, rates;
- `isolation`: the co-access graph, transactions that cross a group's boundary, candidate
  groups (networkx communities, kept whole along foreign keys);
- `findings`: the routing.* and isolation.* findings, in `plan`'s shape;
- `observe`: the whole observation, for a playbook or a bare source (suggest groups);
- `picture`: the co-access graph as SVG (Graphviz) or DOT.
"""
