if "." not in __name__:                 # imported by its old name (ANIMAL-SPOT/ on sys.path): the package's room
    import as_package
    as_package.adopt(__name__)
