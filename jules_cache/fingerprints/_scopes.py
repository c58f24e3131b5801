"""Tell, for every name in a function's source, whether it is one of its own locals.

The code fingerprint resolves the names a feature reads on the live objects (its module's
globals, its closure cells). A name the function binds itself — a parameter, an assignment,
a ``for``/``with``/``except`` target, an import in its body, a walrus, a comprehension or lambda
variable, a nested function's argument — is not the module global of the same name: hashing
that global would make an unrelated edit a miss (``def f(ticks, config)`` beside a global
``config``). Python decides this at compile time by the rules of the language reference
("Resolution of names"); this module applies the same rules to the AST:

* a name bound anywhere in a function scope is local to the whole scope, unless the scope
  declares it ``global`` (then it IS the global, even where assigned) or ``nonlocal``;
* a name a scope does not bind is looked up in the enclosing *function* scopes — class bodies
  are skipped, as at run time — and is global if none binds it;
* comprehensions are scopes of their own, except for their first iterable (evaluated in the
  enclosing scope) and walrus targets (bound in the enclosing function);
* defaults, annotations, decorators and base classes are evaluated where the ``def`` /
  ``class`` / ``lambda`` statement is.

The parsed source is a fragment (one function, class or lambda), so a name its top level does
not bind is free: a global of the real module, or a closure cell of a nested feature.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

_Function = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
_Comprehension = ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp


@dataclass(eq=False)
class _Scope:
    kind: str  # "top", "function", "class" or "comprehension"
    parent: _Scope | None
    bound: set[str] = field(default_factory=set)
    declared_global: set[str] = field(default_factory=set)
    declared_nonlocal: set[str] = field(default_factory=set)


def local_names(tree: ast.AST) -> set[int]:
    """Return the ids of the ``ast.Name`` nodes of ``tree`` that name a local of a scope
    inside it (not a global and not a closure cell from outside the fragment)."""
    visitor = _Visitor()
    visitor.visit(tree)
    return {id(node) for node, scope in visitor.uses if _is_local(node.id, scope)}


def _is_local(name: str, scope: _Scope) -> bool:
    current: _Scope | None = scope
    first = True
    while current is not None and current.kind != "top":
        if current.kind == "class" and not first:
            pass  # the functions inside a class body do not see its names
        elif name in current.declared_global:
            return False
        elif current.kind == "class":
            # A class body reads a name from its own namespace if it is there yet, else from
            # outside (``x = x`` reads the global): never decided by the body alone.
            pass
        elif name in current.bound and name not in current.declared_nonlocal:
            return True
        first = False
        current = current.parent
    return False


class _Visitor(ast.NodeVisitor):
    """Record every name use with its scope, and what each scope binds and declares."""

    def __init__(self) -> None:
        self.scope = _Scope("top", None)
        self.uses: list[tuple[ast.Name, _Scope]] = []

    def _enter(self, kind: str) -> _Scope:
        self.scope = _Scope(kind, self.scope)
        return self.scope

    def _leave(self, scope: _Scope) -> None:
        assert scope.parent is not None
        self.scope = scope.parent

    def _bind(self, name: str, scope: _Scope | None = None) -> None:
        (scope or self.scope).bound.add(name)

    # -- names and declarations -----------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> None:
        self.uses.append((node, self.scope))
        if not isinstance(node.ctx, ast.Load):
            self._bind(node.id)

    def visit_Global(self, node: ast.Global) -> None:
        self.scope.declared_global.update(node.names)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.scope.declared_nonlocal.update(node.names)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        target = self.scope
        while target.kind == "comprehension" and target.parent is not None:
            target = target.parent  # a walrus binds in the enclosing function (PEP 572)
        assert isinstance(node.target, ast.Name)
        self.uses.append((node.target, target))
        self._bind(node.target.id, target)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._bind(alias.asname or alias.name.partition(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self._bind(alias.asname or alias.name)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._bind(node.name)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            self._bind(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._bind(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        if node.rest:
            self._bind(node.rest)
        self.generic_visit(node)

    # -- scopes ---------------------------------------------------------------------------

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        if node.returns is not None:
            self.visit(node.returns)
        self._bind(node.name)
        self._function(node, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._function(node, [node.body])

    def _function(self, node: _Function, body: list[ast.stmt] | list[ast.expr]) -> None:
        arguments = node.args
        for default in [*arguments.defaults, *arguments.kw_defaults]:
            if default is not None:
                self.visit(default)
        parameters = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
        parameters += [a for a in (arguments.vararg, arguments.kwarg) if a is not None]
        for parameter in parameters:
            if parameter.annotation is not None:
                self.visit(parameter.annotation)
        scope = self._enter("function")
        for parameter in parameters:
            self._bind(parameter.arg)
        for statement in body:
            self.visit(statement)
        self._leave(scope)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expression in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(expression)
        self._bind(node.name)
        scope = self._enter("class")
        for statement in node.body:
            self.visit(statement)
        self._leave(scope)

    def _comprehension(self, node: _Comprehension, elements: list[ast.expr]) -> None:
        generators = node.generators
        self.visit(generators[0].iter)  # evaluated in the enclosing scope
        scope = self._enter("comprehension")
        for index, generator in enumerate(generators):
            if index:
                self.visit(generator.iter)
            self.visit(generator.target)
            for condition in generator.ifs:
                self.visit(condition)
        for element in elements:
            self.visit(element)
        self._leave(scope)

    def visit_ListComp(self, node: ast.ListComp) -> None:
        self._comprehension(node, [node.elt])

    def visit_SetComp(self, node: ast.SetComp) -> None:
        self._comprehension(node, [node.elt])

    def visit_GeneratorExp(self, node: ast.GeneratorExp) -> None:
        self._comprehension(node, [node.elt])

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, [node.key, node.value])
