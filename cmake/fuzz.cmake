# libFuzzer targets (tests/fuzz/fuzz_*.cpp), built with -DDIFFUSE_FUZZ=ON by a
# clang build; scripts/fuzz.sh configures one (build-fuzz) and runs them.
#
# Usable two ways: `include(cmake/fuzz.cmake)` from CMakeLists.txt, or
# `-DCMAKE_PROJECT_INCLUDE=cmake/fuzz.cmake` on the cmake command line (what
# fuzz.sh passes, so it works without the include). Either way the targets are
# declared at the end of the top-level directory, once the diffuse_* libraries
# exist. The libraries themselves get coverage instrumentation from the
# -fsanitize=fuzzer-no-link,... flags fuzz.sh / sanitize.sh put in
# CMAKE_CXX_FLAGS. With DIFFUSE_TESTS=ON (sanitize.sh's build) each target also
# replays its checked-in corpus as the ctest test <target>_corpus.
include_guard(GLOBAL)
option(DIFFUSE_FUZZ "Build the libFuzzer targets in tests/fuzz (clang only)" OFF)

function(diffuse_add_fuzzers)
  if(NOT DIFFUSE_FUZZ)
    return()
  endif()
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "DIFFUSE_FUZZ needs clang (libFuzzer): configure with CXX=clang++ or use scripts/fuzz.sh")
  endif()
  # target -> the library whose parser it drives
  set(fuzz_libs
      fuzz_safetensors=diffuse_io fuzz_torch_checkpoint=diffuse_io fuzz_png=diffuse_io fuzz_infotext=diffuse_io
      fuzz_tokenizer=diffuse_text fuzz_prompt_weights=diffuse_text fuzz_request_json=diffuse_pipeline)
  foreach(pair ${fuzz_libs})
    string(REPLACE "=" ";" pair ${pair})
    list(GET pair 0 name)
    list(GET pair 1 lib)
    add_executable(${name} ${CMAKE_SOURCE_DIR}/tests/fuzz/${name}.cpp)
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests/fuzz)
    target_link_libraries(${name} PRIVATE ${lib})
    target_compile_definitions(${name} PRIVATE DIFFUSE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  endforeach()
  # Replay of each checked-in corpus (seeds and regress_* crash inputs) as a
  # ctest regression test, label "fuzz": -runs=0 executes the inputs once, no
  # mutation, and fails on any sanitizer report.
  if(DIFFUSE_TESTS)
    foreach(pair ${fuzz_libs})
      string(REPLACE "=" ";" pair ${pair})
      list(GET pair 0 name)
      add_test(NAME ${name}_corpus COMMAND ${name} -runs=0 ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/${name})
      set_tests_properties(${name}_corpus PROPERTIES LABELS "fuzz" TIMEOUT 300)
    endforeach()
  endif()
  add_custom_target(fuzzers DEPENDS fuzz_safetensors fuzz_torch_checkpoint fuzz_png fuzz_infotext fuzz_tokenizer
                                    fuzz_prompt_weights fuzz_request_json)
endfunction()

cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL diffuse_add_fuzzers)
