; Bash spans.

[
  (command)
  (declaration_command)
  (variable_assignment)
  (pipeline)
] @statement.outer

(compound_statement) @block.inner
(do_group) @block.inner

(function_definition body: (compound_statement) @function.inner)

(variable_assignment value: (_) @assignment.rhs)

(if_statement condition: (_) @expression)
(while_statement condition: (_) @expression)

(string) @string.inner
