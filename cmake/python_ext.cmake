# kiln._native, the CPython extension for the Python binding's hot path (python/kiln/_native.c),
# built into the build directory next to libkiln.so so that a source checkout gets it too
# (python/kiln/_lib.py looks for it beside the libkiln it loads). Optional: without Python
# headers or numpy the binding falls back to ctypes, so a missing piece only skips the target.
#
# The interpreter is the `python3` first on PATH (the one that runs the tests), not whatever
# FindPython3 would prefer, because the module's ABI tag must match the interpreter that imports it.
if(NOT Python3_EXECUTABLE)
  find_program(KILN_PYTHON3 NAMES python3 python)
  if(KILN_PYTHON3)
    set(Python3_EXECUTABLE "${KILN_PYTHON3}")
  endif()
endif()
find_package(Python3 COMPONENTS Interpreter Development.Module QUIET)
set(KILN_NUMPY_INCLUDE "")
if(Python3_FOUND AND Python3_Development.Module_FOUND)
  execute_process(COMMAND "${Python3_EXECUTABLE}" -c "import numpy; print(numpy.get_include())"
                  OUTPUT_VARIABLE KILN_NUMPY_INCLUDE OUTPUT_STRIP_TRAILING_WHITESPACE
                  RESULT_VARIABLE KILN_NUMPY_RC ERROR_QUIET)
  if(NOT KILN_NUMPY_RC EQUAL 0 OR NOT EXISTS "${KILN_NUMPY_INCLUDE}/numpy/arrayobject.h")
    set(KILN_NUMPY_INCLUDE "")
  endif()
endif()
if(KILN_NUMPY_INCLUDE)
  Python3_add_library(kiln_python_ext MODULE WITH_SOABI python/kiln/_native.c)
  target_include_directories(kiln_python_ext PRIVATE include "${KILN_NUMPY_INCLUDE}")
  target_link_libraries(kiln_python_ext PRIVATE kiln)
  # $ORIGIN: the libkiln.so beside it, wherever the build directory is moved; when Python has
  # already loaded a libkiln.so (KILN_LIBRARY), the loader reuses that one by its soname.
  set_target_properties(kiln_python_ext PROPERTIES
    OUTPUT_NAME _native
    LIBRARY_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}"
    C_VISIBILITY_PRESET hidden
    BUILD_RPATH "\$ORIGIN"
    SKIP_BUILD_RPATH OFF
    BUILD_RPATH_USE_ORIGIN ON)
  message(STATUS "kiln: Python extension kiln._native (${Python3_EXECUTABLE}, numpy ${KILN_NUMPY_INCLUDE})")
else()
  message(STATUS "kiln: Python extension skipped (no Python 3 development headers or numpy)")
endif()
