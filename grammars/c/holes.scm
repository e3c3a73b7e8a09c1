; C holes: TODO comments (`// TODO`, `/* TODO */`).

((comment) @hole
  (#match? @hole "^(//+|/[*]+) *(TODO|FIXME)"))
