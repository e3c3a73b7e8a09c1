; Ruby spans.

(body_statement [(assignment) (operator_assignment) (call) (return) (identifier)] @statement.outer)
(then [(assignment) (operator_assignment) (call) (return) (identifier)] @statement.outer)
(program [(assignment) (operator_assignment) (call) (identifier)] @statement.outer)

(body_statement) @block.inner
(then) @block.inner
(block_body) @block.inner

(method body: (body_statement) @function.inner)
(singleton_method body: (body_statement) @function.inner)

(call arguments: (argument_list) @call.inner)

(assignment right: (_) @assignment.rhs)
(operator_assignment right: (_) @assignment.rhs)

(return (argument_list) @expression)
(if condition: (_) @expression)
(unless condition: (_) @expression)
(while condition: (_) @expression)

(string) @string.inner
