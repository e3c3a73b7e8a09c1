; C# spans.

[
  (expression_statement)
  (local_declaration_statement)
  (return_statement)
  (throw_statement)
  (using_directive)
] @statement.outer

(block) @block.inner
(declaration_list) @block.inner

(method_declaration body: (block) @function.inner)
(constructor_declaration body: (block) @function.inner)
(local_function_statement body: (block) @function.inner)

(invocation_expression arguments: (argument_list) @call.inner)
(object_creation_expression arguments: (argument_list) @call.inner)

(variable_declarator "=" . (_) @assignment.rhs)
(assignment_expression right: (_) @assignment.rhs)

(return_statement (_) @expression)
(if_statement condition: (_) @expression)
(while_statement condition: (_) @expression)

(string_literal) @string.inner

(field_declaration) @statement.outer
